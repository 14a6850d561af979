//! The scheduling priority of a process whose work may wait: a notifier sharing a host with the
//! roles that answer customers lowers its own priority, so that under load its messages lag
//! behind, never the checkouts (on a host or pod of its own, nothing competes and nothing
//! changes).

use std::io;

/// Lowers every thread of this process to `niceness` (never raises one: a thread already nicer
/// keeps its own). Threads made afterwards inherit their maker's niceness. Returns how many
/// threads were lowered.
///
/// Linux keeps a niceness per thread, so each of `/proc/self/task` is set; elsewhere the
/// process's is. A thread that one not yet lowered makes while the list is read inherits the
/// old niceness, so the list is read again until a reading finds none to lower (at most
/// [`PASSES`] times).
pub fn lower_to(niceness: i32) -> io::Result<usize> {
    let mut lowered = 0;
    for _ in 0..PASSES {
        match lower_listed(niceness)? {
            0 => break,
            more => lowered += more,
        }
    }
    Ok(lowered)
}

/// The most readings of the thread list [`lower_to`] makes.
const PASSES: usize = 16;

/// One reading of the thread list: lowers each listed thread; answers how many it lowered.
fn lower_listed(niceness: i32) -> io::Result<usize> {
    use rustix::process::{Pid, getpriority_process, setpriority_process};
    let tasks = match std::fs::read_dir("/proc/self/task") {
        Ok(tasks) => tasks,
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            let current = getpriority_process(None)?;
            if current < niceness {
                setpriority_process(None, niceness)?;
                return Ok(1);
            }
            return Ok(0);
        }
        Err(error) => return Err(error),
    };
    let mut lowered = 0;
    for task in tasks {
        let task = task?;
        let Some(pid) = task
            .file_name()
            .to_str()
            .and_then(|name| name.parse::<i32>().ok())
            .and_then(Pid::from_raw)
        else {
            continue;
        };
        // A thread that ended meanwhile is no longer there to lower.
        match getpriority_process(Some(pid)) {
            Ok(current) if current < niceness => match setpriority_process(Some(pid), niceness) {
                Ok(()) => lowered += 1,
                Err(rustix::io::Errno::SRCH) => {}
                Err(error) => return Err(error.into()),
            },
            Ok(_) | Err(rustix::io::Errno::SRCH) => {}
            Err(error) => return Err(error.into()),
        }
    }
    Ok(lowered)
}

#[cfg(test)]
mod tests {
    use super::lower_to;

    /// Run in a process of its own (the test binary's other threads would be lowered too, which
    /// harms nothing but their speed): every thread, one made before and one made after, ends
    /// at the niceness asked for, and asking for less changes nothing.
    #[test]
    fn every_thread_is_lowered_and_new_ones_inherit_it() {
        let niceness = |tid: i32| {
            rustix::process::getpriority_process(rustix::process::Pid::from_raw(tid)).unwrap()
        };
        let (before_tx, before_rx) = std::sync::mpsc::channel();
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let before = std::thread::spawn(move || {
            before_tx
                .send(rustix::thread::gettid().as_raw_nonzero().get())
                .unwrap();
            go_rx.recv().unwrap();
            rustix::process::getpriority_process(None).unwrap()
        });
        let before_tid = before_rx.recv().unwrap();
        assert!(lower_to(7).unwrap() >= 1);
        assert!(niceness(before_tid) >= 7);
        go_tx.send(()).unwrap();
        assert!(before.join().unwrap() >= 7);
        let after = std::thread::spawn(|| rustix::process::getpriority_process(None).unwrap());
        assert!(after.join().unwrap() >= 7);
        // Lower than asked already: kept.
        assert_eq!(lower_to(3).unwrap(), 0);
        assert!(rustix::process::getpriority_process(None).unwrap() >= 7);
    }
}
