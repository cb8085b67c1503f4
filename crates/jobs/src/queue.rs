//! The master's job queue (docs/jobs.md), without processes or time in it so that its rules can be
//! tested alone: jobs wait in order of submission and the first one that may start does.
//!
//! - a job whose name runs or waits already is not queued again unless it says `runalways`;
//! - `runlast` waits until nothing else runs and nothing but other `runlast` jobs waits;
//! - `runone: REGEXP` waits while a job whose name matches runs;
//! - `runafter: REGEXP` waits while a job whose name matches runs or waits (ahead or behind);
//! - `skipqueue` starts at once or is dropped;
//! - local jobs need one of the `-server-job-workers` slots, server jobs run inside the master.

use super::{Job, JobOptions, JobType};
use std::collections::{BTreeMap, VecDeque};

struct Waiting {
    job: Job,
    opts: JobOptions,
}

/// What [`Queue::submit`] did with a job.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Submitted {
    Queued,
    Skipped(String),
}

/// Waiting and running jobs.
#[derive(Default)]
pub(crate) struct Queue {
    waiting: VecDeque<Waiting>,
    running: BTreeMap<u64, Job>,
    next_id: u64,
}

impl Queue {
    pub(crate) fn new() -> Queue {
        Queue::default()
    }

    /// Whether waiting job `i` may start now with `slots` free worker slots.
    fn may_start(&self, i: usize, slots: usize) -> bool {
        let w = &self.waiting[i];
        if w.job.kind == JobType::Local && slots == 0 {
            return false;
        }
        let runs = |rx: &regex::Regex| self.running.values().any(|j| rx.is_match(&j.name));
        if w.opts.runlast
            && (!self.running.is_empty()
                || self
                    .waiting
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != i && !o.opts.runlast))
        {
            return false;
        }
        if w.opts.runone.as_ref().is_some_and(runs) {
            return false;
        }
        if let Some(rx) = &w.opts.runafter {
            if runs(rx)
                || self
                    .waiting
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != i && rx.is_match(&o.job.name))
            {
                return false;
            }
        }
        true
    }

    /// Queues `job` (its options were validated when the spec was parsed).
    pub(crate) fn submit(&mut self, job: Job, slots: usize) -> Submitted {
        let opts = job.options().unwrap_or_default();
        if !opts.runalways
            && (self.running.values().any(|j| j.name == job.name)
                || self.waiting.iter().any(|w| w.job.name == job.name))
        {
            return Submitted::Skipped(format!("{} is already running or waiting", job.name));
        }
        let skip = opts.skipqueue;
        self.waiting.push_back(Waiting { job, opts });
        if skip && !self.may_start(self.waiting.len() - 1, slots) {
            let w = self
                .waiting
                .pop_back()
                .map(|w| w.job.name)
                .unwrap_or_default();
            return Submitted::Skipped(format!("{w} cannot start now (skipqueue)"));
        }
        Submitted::Queued
    }

    /// Adds a job claimed from the durable queue: its uniqueness was decided there, so only the
    /// ordering rules (runlast, runone, runafter, slots) apply.
    pub(crate) fn push(&mut self, job: Job) {
        let opts = job.options().unwrap_or_default();
        self.waiting.push_back(Waiting { job, opts });
    }

    /// The first waiting job that may start, moved to the running set with its run id.
    pub(crate) fn next(&mut self, slots: usize) -> Option<(u64, Job)> {
        let i = (0..self.waiting.len()).find(|&i| self.may_start(i, slots))?;
        let w = self.waiting.remove(i)?;
        self.next_id += 1;
        self.running.insert(self.next_id, w.job.clone());
        Some((self.next_id, w.job))
    }

    /// A running job ended.
    pub(crate) fn finish(&mut self, id: u64) -> Option<Job> {
        self.running.remove(&id)
    }

    pub(crate) fn waiting(&self) -> impl Iterator<Item = &Job> {
        self.waiting.iter().map(|w| &w.job)
    }

    /// Drops every waiting job (the master is stopping).
    pub(crate) fn clear_waiting(&mut self) -> usize {
        let n = self.waiting.len();
        self.waiting.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(name: &str, args: serde_json::Value) -> Job {
        Job {
            name: name.into(),
            args,
            kind: JobType::Local,
            queued: None,
        }
    }

    fn names(q: &mut Queue, slots: usize) -> Vec<String> {
        let mut out = Vec::new();
        while let Some((_, j)) = q.next(slots) {
            out.push(j.name);
        }
        out
    }

    #[test]
    fn duplicates_unless_runalways_and_slots() {
        let mut q = Queue::new();
        assert_eq!(q.submit(job("a", json!({})), 1), Submitted::Queued);
        assert!(matches!(
            q.submit(job("a", json!({})), 1),
            Submitted::Skipped(_)
        ));
        assert_eq!(
            q.submit(job("a", json!({"runalways": true})), 1),
            Submitted::Queued
        );
        assert_eq!(q.submit(job("b", json!({})), 1), Submitted::Queued);
        // One slot: the first starts, the rest wait for a slot.
        let (id, first) = q.next(1).expect("one");
        assert_eq!(first.name, "a");
        assert!(q.next(0).is_none(), "no slot left");
        assert!(
            matches!(q.submit(job("a", json!({})), 0), Submitted::Skipped(_)),
            "a runs"
        );
        q.finish(id);
        assert_eq!(names(&mut q, 5), ["a", "b"]);
        // Server jobs need no slot.
        let mut q = Queue::new();
        let mut s = job("s", json!({}));
        s.kind = JobType::Server;
        q.submit(s, 0);
        assert_eq!(names(&mut q, 0), ["s"]);
    }

    #[test]
    fn runone_waits_for_a_matching_running_job() {
        let mut q = Queue::new();
        q.submit(job("import", json!({})), 2);
        let (id, _) = q.next(2).expect("import starts");
        q.submit(job("report", json!({"runone": "^import$"})), 2);
        q.submit(job("other", json!({})), 2);
        assert_eq!(names(&mut q, 2), ["other"], "report waits, other does not");
        q.finish(id);
        assert_eq!(names(&mut q, 2), ["report"]);
    }

    #[test]
    fn runafter_waits_for_matching_running_and_waiting_jobs() {
        let mut q = Queue::new();
        q.submit(job("step2", json!({"runafter": "^step1$"})), 1);
        q.submit(job("step1", json!({})), 1);
        let (id, j) = q.next(2).expect("step1 first although submitted second");
        assert_eq!(j.name, "step1");
        assert!(q.next(2).is_none(), "step2 waits while step1 runs");
        q.finish(id);
        assert_eq!(names(&mut q, 2), ["step2"]);
    }

    #[test]
    fn runlast_and_skipqueue() {
        let mut q = Queue::new();
        q.submit(job("last", json!({"runlast": 1})), 1);
        q.submit(job("x", json!({})), 1);
        q.submit(job("y", json!({})), 1);
        let (a, _) = q.next(1).expect("x");
        assert!(
            q.next(0).is_none(),
            "y waits for the slot, last for everything"
        );
        q.finish(a);
        let (b, j) = q.next(1).expect("y");
        assert_eq!(j.name, "y");
        assert!(q.next(1).is_none(), "last waits while y runs");
        q.finish(b);
        assert_eq!(names(&mut q, 1), ["last"]);
        // skipqueue: dropped when it cannot start at once.
        let mut q = Queue::new();
        q.submit(job("busy", json!({})), 1);
        let _ = q.next(1);
        assert!(matches!(
            q.submit(job("now", json!({"skipqueue": true})), 0),
            Submitted::Skipped(_)
        ));
        assert_eq!(q.waiting().count(), 0);
        assert_eq!(
            q.submit(job("now", json!({"skipqueue": true})), 1),
            Submitted::Queued
        );
    }
}
