//! Counting a worker's tasks, so that a drain can wait until the last client has
//! been answered and the last server connection has finished.

use std::cell::Cell;
use std::future::Future;
use std::rc::Rc;

use tokio::sync::Notify;
use tokio::task::JoinHandle;

#[derive(Default)]
pub(crate) struct TaskCount {
    live: Cell<usize>,
    idle: Notify,
}

/// Held by a counted task for its life.
pub(crate) struct TaskGuard(Rc<TaskCount>);

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let count = &self.0;
        count.live.set(count.live.get() - 1);
        if count.live.get() == 0 {
            count.idle.notify_waiters();
        }
    }
}

impl TaskCount {
    pub(crate) fn enter(self: &Rc<Self>) -> TaskGuard {
        self.live.set(self.live.get() + 1);
        TaskGuard(self.clone())
    }

    /// Spawns `task` on the current `LocalSet`, counted until it ends.
    pub(crate) fn spawn(
        self: &Rc<Self>,
        task: impl Future<Output = ()> + 'static,
    ) -> JoinHandle<()> {
        let guard = self.enter();
        tokio::task::spawn_local(async move {
            let _guard = guard;
            task.await
        })
    }

    pub(crate) fn live(&self) -> usize {
        self.live.get()
    }

    /// Returns once no counted task is left.
    pub(crate) async fn idle(&self) {
        loop {
            let notified = self.idle.notified();
            if self.live.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_waits_for_every_counted_task() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async {
            let count = Rc::new(TaskCount::default());
            let done = Rc::new(Cell::new(0));
            for ms in [5, 20] {
                let done = done.clone();
                count.spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                    done.set(done.get() + 1);
                });
            }
            assert_eq!(count.live(), 2);
            count.idle().await;
            assert_eq!(done.get(), 2);
            assert_eq!(count.live(), 0);
        });
    }
}
