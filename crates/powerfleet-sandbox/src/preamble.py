# powerfleet sandbox preamble: runs before the untrusted program, in the sandbox's python3.
# argv: memory_bytes cpu_seconds file_bytes processes drop_privileges guard_network guard_files
# stdin: the nonce on the first line, then the program.
import os, sys, resource

def _pf_setup():
    mem, cpu, fsize, nproc = (int(a) for a in sys.argv[1:5])
    drop, guard_net, guard_files = (a == "1" for a in sys.argv[5:8])
    data = sys.stdin.buffer.read().decode("utf-8", "replace")
    nonce, _, program = data.partition("\n")
    # The harness's channel: the original stdout, kept on a descriptor the program's children
    # do not inherit across exec; the program's own output goes to a file in the directory.
    channel = os.dup(1)
    os.set_inheritable(channel, False)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    out = os.open("output.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(out, 1)
    os.dup2(out, 2)
    os.close(out)
    limits = [
        (resource.RLIMIT_AS, mem, mem),
        (resource.RLIMIT_DATA, mem, mem),
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_FSIZE, fsize, fsize),
        (resource.RLIMIT_CORE, 0, 0),
    ]
    for which, soft, hard in limits:
        resource.setrlimit(which, (soft, hard))
    if drop:
        # Running as root: become nobody, so the program can touch no file of the fleet's and
        # RLIMIT_NPROC (which root ignores) applies.
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
    resource.setrlimit(resource.RLIMIT_NPROC, (nproc, nproc))
    if guard_net:
        import socket, _socket
        def blocked(*args, **kwargs):
            raise PermissionError("network access is disabled in the sandbox")
        for mod in (socket, _socket):
            for name in ("socket", "socketpair", "create_connection", "create_server", "fromfd", "getaddrinfo"):
                if hasattr(mod, name):
                    setattr(mod, name, blocked)
    if guard_files:
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
