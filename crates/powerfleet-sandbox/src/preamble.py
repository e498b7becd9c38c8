# powerfleet sandbox preamble: runs before the untrusted program, in the sandbox's python3.
# argv: memory_bytes cpu_seconds file_bytes processes open_files seccomp_filter mode
#   seccomp_filter: a compiled seccomp filter (struct sock_filter[]) as hex, or "-" for none.
#   mode "bwrap": inside bubblewrap's namespaces, already unprivileged: limits only.
#   mode "root" / "user": unisolated (collector --grading-unisolated), run as root (becomes
#   nobody) or as another user; Python-level guards stand in for the namespaces, and stop only
#   honest mistakes.
# stdin: the nonce on the first line, then the program.
# stdout: the harness's channel (nonce-tagged lines); stderr: the program's stdout and stderr.
import os, sys, resource

def _pf_setup():
    mem, cpu, fsize, nproc, nofile = (int(a) for a in sys.argv[1:6])
    seccomp_filter = sys.argv[6]
    mode = sys.argv[7]
    data = sys.stdin.buffer.read().decode("utf-8", "replace")
    nonce, _, program = data.partition("\n")
    # The harness's channel: the original stdout, kept on a descriptor the program's children
    # do not inherit across exec. The program's stdout and stderr both go to the output pipe
    # (the original stderr), which the collector reads up to a byte limit.
    channel = os.dup(1)
    os.set_inheritable(channel, False)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    limits = [
        (resource.RLIMIT_AS, mem, mem),
        (resource.RLIMIT_DATA, mem, mem),
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        # Bounds every file the program writes (on the tmpfs; memfd files are refused below).
        (resource.RLIMIT_FSIZE, fsize, fsize),
        # Bounds the files, pipes and sockets each process holds, and so their kernel buffers.
        (resource.RLIMIT_NOFILE, nofile, nofile),
        (resource.RLIMIT_CORE, 0, 0),
        (resource.RLIMIT_MSGQUEUE, 0, 0),
    ]
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))
    if mode == "root":
        # Unisolated and root: become nobody, so the program can touch no file of the fleet's
        # and RLIMIT_NPROC (which root ignores) applies.
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    # Inside bubblewrap this counts the processes (and threads) of the sandbox's own user
    # namespace, bubblewrap's init included.
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    if seccomp_filter != "-":
        # Refuses memfd files, System V IPC, io_uring and sockets other than Unix ones to the
        # program and its children (src/seccomp.rs says why). Installed last: no call of the
        # preamble's needs them, and a filter that cannot be installed stops the run here.
        import ctypes
        code = bytes.fromhex(seccomp_filter)
        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]
        prog = SockFprog(len(code) // 8, code)
        prctl = ctypes.CDLL(None, use_errno=True).prctl
        prctl.argtypes = [ctypes.c_int] + [ctypes.c_ulong] * 4
        PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2
        if prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
        if prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.addressof(prog), 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")
    if mode != "bwrap":
        import socket, _socket
        def blocked(*args, **kwargs):
            raise PermissionError("network access is disabled in the sandbox")
        for mod in (socket, _socket):
            for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd", "getaddrinfo"):
                if hasattr(mod, name):
                    setattr(mod, name, blocked)
    if mode == "user":
        import shutil, subprocess
        for name in ("remove", "unlink", "rmdir", "removedirs", "rename", "renames", "replace",
                     "truncate", "chmod", "chown", "lchown", "fchmod", "fchown", "kill", "killpg",
                     "system", "fork", "forkpty", "putenv", "chroot", "setuid"):
            if hasattr(os, name):
                setattr(os, name, None)
        shutil.rmtree = shutil.move = shutil.chown = None
        subprocess.Popen = None
    sys.argv = ["program.py"]
    return channel, nonce, program

_pf_channel, _pf_nonce, _pf_program = _pf_setup()
del _pf_setup
os.write(_pf_channel, (_pf_nonce + " ready\n").encode())
def _pf_flush():
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            pass

try:
    exec(compile(_pf_program, "program.py", "exec"), {})
    _pf_flush()
except BaseException as e:
    _pf_flush()
    reason = (type(e).__name__ + ": " + str(e))[:500].replace("\n", " ")
    os.write(_pf_channel, (_pf_nonce + " failed " + reason + "\n").encode())
    os._exit(1)
os.write(_pf_channel, (_pf_nonce + " passed\n").encode())
os._exit(0)
