//! The threads that run SQL reads, so no user statement ever runs on the
//! async runtime that carries Raft's heartbeats, votes and appends.
//!
//! A read is a job on a bounded queue, taken by one of a fixed set of
//! threads (`quorumlite-read-N`, as many as there are read connections).
//! The caller awaits the job's answer; if the caller goes away first (its
//! gRPC call was cancelled, its HTTP connection closed), the job's cancel
//! flag is set and SQLite's progress handler stops the statement
//! (`storage::Limits`). A full queue refuses a read at once
//! (`UNAVAILABLE`, retry on another node) instead of letting work pile up
//! without bound.
//!
//! Before, reads ran inline on the async workers: a point read costs
//! microseconds, and the hand-off was a third of the read throughput. But
//! one statement of several seconds held a worker that long, and with one
//! worker (`quorumlite dev`) the node's heartbeats stopped and a new
//! leader was elected. The hand-off is paid once per batch call (the
//! client library batches concurrent reads).

use super::error::Unavailable;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// Jobs that may wait for a thread, per thread.
const QUEUED_PER_THREAD: usize = 64;

/// The read threads' nice value (Linux: per thread). At 10 a runnable
/// read thread weighs a tenth of a normal one with the scheduler.
pub const READ_NICE: i32 = 19;

/// The read threads; cheap to clone.
#[derive(Clone)]
pub struct Readers {
    jobs: SyncSender<Job>,
    /// Jobs queued or running, for the refusal's message.
    pending: Arc<AtomicUsize>,
    threads: usize,
}

impl Readers {
    /// Start `threads` read threads.
    pub fn start(threads: usize) -> std::io::Result<Readers> {
        let threads = threads.max(1);
        let (jobs, queue) = sync_channel::<Job>(threads * QUEUED_PER_THREAD);
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..threads {
            let queue = Arc::clone(&queue);
            std::thread::Builder::new()
                .name(format!("quorumlite-read-{n}"))
                .spawn(move || serve(&queue))?;
        }
        Ok(Readers {
            jobs,
            pending: Arc::default(),
            threads,
        })
    }

    /// Run `read` on a read thread and return what it returns. `read` gets
    /// the flag that is set when the caller of this future goes away.
    pub async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static,
    ) -> Result<T, Unavailable> {
        self.run_until(None, read).await
    }

    /// [`Readers::run`], with `gone` (when given) as the flag: set by the
    /// caller when its client went away, and also when this future is
    /// dropped.
    pub async fn run_until<T: Send + 'static>(
        &self,
        gone: Option<Arc<AtomicBool>>,
        read: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static,
    ) -> Result<T, Unavailable> {
        let cancel = gone.unwrap_or_default();
        let mut guard = CancelOnDrop(Some(Arc::clone(&cancel)));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let pending = Arc::clone(&self.pending);
        let job: Job = Box::new(move || {
            let _done = Done(pending);
            let _ = tx.send(read(cancel));
        });
        self.pending.fetch_add(1, Ordering::Relaxed);
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                return Err(Unavailable::Down(format!(
                    "this node has {} reads queued or running on its {} read threads: retry on another node, or later",
                    self.pending.load(Ordering::Relaxed),
                    self.threads
                )));
            }
            Err(TrySendError::Disconnected(_)) => {
                self.pending.fetch_sub(1, Ordering::Relaxed);
                return Err(Unavailable::ShuttingDown);
            }
        }
        let out = rx
            .await
            .map_err(|_| Unavailable::Internal("a read failed on its thread (logged)".into()));
        guard.0 = None;
        out
    }
}

/// Sets the flag when dropped while armed: the caller went away before
/// the answer.
struct CancelOnDrop(Option<Arc<AtomicBool>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(flag) = &self.0 {
            flag.store(true, Ordering::Relaxed);
        }
    }
}

/// Counts a job out when it ends, even by a panic.
struct Done(Arc<AtomicUsize>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

fn serve(queue: &Mutex<Receiver<Job>>) {
    yield_to_everything_else();
    loop {
        let job = {
            let rx = queue.lock().unwrap_or_else(|p| p.into_inner());
            rx.recv()
        };
        match job {
            // A panicking read must not take its thread with it.
            Ok(job) => {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a read panicked; its caller gets an internal error");
                }
            }
            Err(_) => return,
        }
    }
}

/// Put the calling thread under `SCHED_IDLE` (else at nice 19).
fn yield_to_everything_else() {
    // SAFETY: gettid, sched_setscheduler and setpriority have no memory
    // preconditions beyond a valid `sched_param`; given a thread id, Linux
    // applies them to that thread only.
    let ok = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::pid_t;
        let param = libc::sched_param { sched_priority: 0 };
        libc::sched_setscheduler(tid, libc::SCHED_IDLE, &param) == 0
            || libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, READ_NICE) == 0
    };
    if !ok {
        tracing::debug!("could not lower a read thread's priority; it runs at normal priority");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn a_read_runs_on_a_read_thread_and_a_dropped_caller_sets_its_cancel_flag() {
        let readers = Readers::start(2).expect("start");
        let name = readers
            .run(|_| std::thread::current().name().map(str::to_owned))
            .await
            .expect("run");
        assert!(name.is_some_and(|n| n.starts_with("quorumlite-read-")));

        let (seen_tx, seen_rx) = std::sync::mpsc::channel();
        let r = readers.clone();
        let call = tokio::spawn(async move {
            r.run(move |cancel| {
                let started = Instant::now();
                while !cancel.load(Ordering::Relaxed) && started.elapsed() < Duration::from_secs(5)
                {
                    std::thread::sleep(Duration::from_millis(5));
                }
                let _ = seen_tx.send(cancel.load(Ordering::Relaxed));
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        call.abort();
        let cancelled = tokio::task::spawn_blocking(move || {
            seen_rx
                .recv_timeout(Duration::from_secs(2))
                .unwrap_or(false)
        })
        .await
        .expect("join");
        assert!(cancelled, "the read saw its caller go away");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once() {
        let readers = Readers::start(1).expect("start");
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let release_rx = Arc::new(Mutex::new(release_rx));
        let hold = |r: Readers, started: Option<std::sync::mpsc::Sender<()>>| {
            let rx = Arc::clone(&release_rx);
            tokio::spawn(async move {
                r.run(move |_| {
                    if let Some(s) = started {
                        let _ = s.send(());
                    }
                    let _ = rx.lock().map(|rx| rx.recv_timeout(Duration::from_secs(5)));
                })
                .await
            })
        };
        // One job running on the only thread, then a full queue behind it.
        let (started_tx, started_rx) = std::sync::mpsc::channel();
        let mut held = vec![hold(readers.clone(), Some(started_tx))];
        tokio::task::spawn_blocking(move || started_rx.recv_timeout(Duration::from_secs(5)))
            .await
            .expect("join")
            .expect("the first job runs");
        for _ in 0..QUEUED_PER_THREAD {
            held.push(hold(readers.clone(), None));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let refused = readers.run(|_| ()).await.expect_err("queue full");
        assert!(matches!(refused, Unavailable::Down(_)), "{refused}");
        for _ in 0..=QUEUED_PER_THREAD {
            let _ = release_tx.send(());
        }
        for h in held {
            let _ = h.await;
        }
    }
}
