//! The seccomp filter the preamble installs (`prctl(PR_SET_SECCOMP)`, through `ctypes`) after
//! setting the rlimits and before the program runs; it holds for every process the program
//! starts. It refuses (`EPERM`) the ways to hold memory that no rlimit counts, so that
//! [`crate::SandboxConfig::memory_bound_bytes`] holds. It is passed to the preamble as hex on
//! its command line; a preamble that cannot install it fails before the program runs (a grading
//! failure).
//!
//! - `memfd_create` and `memfd_secret`: a memfd file's pages stay after it is unmapped, as long as
//!   a descriptor (or one in flight on a socket) holds it;
//! - `shmget`, `msgget`, `semget`: System V shared memory, message queues and semaphores live in
//!   the IPC namespace (private to the program, gone with it), but are bounded only by that
//!   namespace's sysctls, which the program cannot lower and bubblewrap does not;
//! - `io_uring_setup`: rings and their buffers are kernel memory held by a descriptor;
//! - `socket` of any family but `AF_UNIX`: a TCP connection over the program's own loopback
//!   buffers megabytes per socket (`net.ipv4.tcp_rmem`), and there is no network to reach anyway.
//!
//! Calls of another architecture (32-bit `int 0x80` calls, x32) kill the process: none of the
//! numbers above would mean the same there. On architectures other than x86_64 and aarch64 no
//! filter is installed (the numbers are not known here), and the bound does not hold for those
//! calls.

/// `struct sock_filter` instructions and `seccomp` return values (linux/filter.h,
/// linux/seccomp.h).
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const RET_K: u16 = 0x06;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO_EPERM: u32 = 0x0005_0000 | 1;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
/// Offsets in `struct seccomp_data`: the call's number, its architecture, its first argument's
/// low 32 bits (little-endian).
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;
const AF_UNIX: u32 = 1;

/// The architecture's audit number, the refused calls, `socket`, and the x32 bit (x86_64).
#[cfg(target_arch = "x86_64")]
const TABLE: Option<(u32, &[u32], u32, Option<u32>)> = Some((
    0xC000_003E,
    // shmget, semget, msgget, memfd_create, io_uring_setup, memfd_secret
    &[29, 64, 68, 319, 425, 447],
    41,
    Some(0x4000_0000),
));
#[cfg(target_arch = "aarch64")]
const TABLE: Option<(u32, &[u32], u32, Option<u32>)> = Some((
    0xC000_00B7,
    // shmget, semget, msgget, memfd_create, io_uring_setup, memfd_secret
    &[194, 190, 186, 279, 425, 447],
    198,
    None,
));
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const TABLE: Option<(u32, &[u32], u32, Option<u32>)> = None;

/// Where a jump goes.
#[derive(Clone, Copy)]
enum To {
    Next,
    Allow,
    Refuse,
    Kill,
}

/// The compiled filter (an array of `struct sock_filter`, as bubblewrap reads it), or `None` on
/// an architecture whose call numbers are not known here.
pub(crate) fn filter() -> Option<Vec<u8>> {
    let (arch, refused, socket, x32) = TABLE?;
    // (code, true, false, k); jumps resolved below.
    let mut program: Vec<(u16, To, To, u32)> = vec![
        (LD_W_ABS, To::Next, To::Next, ARCH),
        (JEQ_K, To::Next, To::Kill, arch),
        (LD_W_ABS, To::Next, To::Next, NR),
    ];
    if let Some(bit) = x32 {
        program.push((JGE_K, To::Kill, To::Next, bit));
    }
    for nr in refused {
        program.push((JEQ_K, To::Refuse, To::Next, *nr));
    }
    program.push((JEQ_K, To::Next, To::Allow, socket));
    program.push((LD_W_ABS, To::Next, To::Next, ARG0_LOW));
    program.push((JEQ_K, To::Allow, To::Refuse, AF_UNIX));
    let allow = program.len();
    let (refuse, kill) = (allow + 1, allow + 2);
    let mut bytes = Vec::with_capacity((program.len() + 3) * 8);
    let mut push = |code: u16, jt: u8, jf: u8, k: u32| {
        bytes.extend_from_slice(&code.to_ne_bytes());
        bytes.push(jt);
        bytes.push(jf);
        bytes.extend_from_slice(&k.to_ne_bytes());
    };
    for (i, (code, jt, jf, k)) in program.iter().enumerate() {
        let offset = |to: To| -> u8 {
            let target = match to {
                To::Next => i + 1,
                To::Allow => allow,
                To::Refuse => refuse,
                To::Kill => kill,
            };
            u8::try_from(target - (i + 1)).expect("a short filter")
        };
        push(*code, offset(*jt), offset(*jf), *k);
    }
    push(RET_K, 0, 0, RET_ALLOW);
    push(RET_K, 0, 0, RET_ERRNO_EPERM);
    push(RET_K, 0, 0, RET_KILL_PROCESS);
    Some(bytes)
}

/// [`filter`] as hex, as the preamble reads it; `-` on an architecture without a filter.
pub(crate) fn filter_hex() -> String {
    match filter() {
        Some(bytes) => bytes.iter().map(|b| format!("{b:02x}")).collect(),
        None => "-".to_string(),
    }
}
