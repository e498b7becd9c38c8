# powerfleet sandbox preamble: runs before the untrusted program, in the sandbox's python3.
# argv: memory_bytes cpu_seconds file_bytes processes mode
#   mode "bwrap": inside bubblewrap's namespaces, already unprivileged: limits only.
#   mode "root" / "user": unisolated (collector --grading-unisolated), run as root (becomes
#   nobody) or as another user; Python-level guards stand in for the namespaces, and stop only
#   honest mistakes.
# stdin: the nonce on the first line, then the program.
# stdout: the harness's channel (nonce-tagged lines); stderr: the program's stdout and stderr.
import os, sys, resource

def _pf_setup():
    mem, cpu, fsize, nproc = (int(a) for a in sys.argv[1:5])
    mode = sys.argv[5]
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
        (resource.RLIMIT_FSIZE, fsize, fsize),
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
