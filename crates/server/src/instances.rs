//! This agent instance's heartbeat, and the sweep that ends the calls of an agent
//! instance that died.
//!
//! An instance ends the calls an earlier run of its own `INSTANCE_ID` left in
//! progress when it starts; but a successor often has another id (a new pod name, a
//! recreated container), so the calls of a killed instance would stay `in-progress`
//! forever. So each agent instance registers a row in the `instances` table at start
//! and refreshes it every `INSTANCE_HEARTBEAT_SECS`; after each refresh it ends the
//! calls still in progress of every instance whose row is older than
//! `INSTANCE_LEASE_SECS` (`instance-lost`), and removes those rows
//! ([`voxgate_store::Store::end_calls_of_lost_instances`]).
//!
//! It only judges others once it has itself refreshed its row without a break for a
//! whole lease: a failed refresh, or one that comes more than half a lease after the
//! one before (the database hung), starts the count again. So an instance cut off
//! from the database never takes the others for dead, and after an outage of the
//! database every live instance has had a lease to refresh its row before anyone
//! sweeps. (The lease being at least three heartbeats, a live instance that reaches
//! the database is never more than a heartbeat plus half a lease late.)
//!
//! An instance that cannot reach the database for longer than a lease while others
//! can is taken for dead: the records of its calls are ended as `instance-lost` even
//! if the calls go on (their later turns are still written); its next heartbeat
//! writes its row again and logs it.
//!
//! A drain ends with [`Heartbeat::stop`]: the heartbeat stops and the row goes (the
//! instance's calls have ended by then).

use std::time::Duration;

use anyhow::bail;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;
use voxgate_domain::call::ended_by_server::INSTANCE_LOST;
use voxgate_store::Store;

use crate::config::ServeArgs;

/// How often to refresh, and how late a row may be before its instance is lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    pub heartbeat: Duration,
    pub lease: Duration,
}

impl Settings {
    /// From `INSTANCE_HEARTBEAT_SECS` and `INSTANCE_LEASE_SECS`; the lease must be at
    /// least three heartbeats (else a live instance with a slow refresh could look lost).
    pub fn from_args(args: &ServeArgs) -> anyhow::Result<Settings> {
        let (heartbeat, lease) = (
            args.instance_heartbeat_secs.max(1),
            args.instance_lease_secs,
        );
        if lease < 3 * heartbeat {
            bail!(
                "INSTANCE_LEASE_SECS ({lease}) must be at least 3 times INSTANCE_HEARTBEAT_SECS ({heartbeat})"
            );
        }
        Ok(Settings {
            heartbeat: Duration::from_secs(heartbeat),
            lease: Duration::from_secs(lease),
        })
    }

    /// The longest time between two refreshes that still counts as unbroken.
    fn max_gap(&self) -> Duration {
        self.lease / 2
    }
}

/// The running heartbeat of this instance.
pub struct Heartbeat {
    store: Store,
    id: String,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Heartbeat {
    /// Registers `id` and starts refreshing its row and sweeping lost instances.
    pub async fn start(store: Store, id: String, settings: Settings) -> anyhow::Result<Heartbeat> {
        store.register_instance(&id).await?;
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(store.clone(), id.clone(), settings, stop.clone()));
        Ok(Heartbeat {
            store,
            id,
            stop,
            task,
        })
    }

    /// Stops the heartbeat and removes this instance's row: call it once the
    /// instance's calls have ended (a clean stop).
    pub async fn stop(self) {
        self.stop.cancel();
        if tokio::time::timeout(Duration::from_secs(10), self.task)
            .await
            .is_err()
        {
            tracing::warn!("the instance heartbeat did not stop");
        }
        if let Err(e) = self.store.remove_instance(&self.id).await {
            tracing::warn!(error = %e, "could not remove this instance's row (others will once its lease runs out)");
        }
    }
}

/// The unbroken run of this instance's own refreshes, which entitles it to judge others.
#[derive(Debug, Clone, Copy)]
struct Streak {
    settings: Settings,
    /// (the run's first refresh, its last); `None` after a failure.
    run: Option<(Instant, Instant)>,
}

/// What a refresh did to the streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refresh {
    /// The run goes on.
    Continued,
    /// A run starts, after a failure.
    Resumed,
    /// A run starts again: this refresh came too long after the last.
    Late,
}

impl Streak {
    /// Registration at `now` is the first refresh.
    fn new(settings: Settings, now: Instant) -> Streak {
        Streak {
            settings,
            run: Some((now, now)),
        }
    }

    fn refreshed(&mut self, now: Instant) -> Refresh {
        let (run, what) = match self.run {
            Some((since, last))
                if now.saturating_duration_since(last) <= self.settings.max_gap() =>
            {
                ((since, now), Refresh::Continued)
            }
            Some(_) => ((now, now), Refresh::Late),
            None => ((now, now), Refresh::Resumed),
        };
        self.run = Some(run);
        what
    }

    /// A refresh failed; returns whether a run was going on.
    fn failed(&mut self) -> bool {
        self.run.take().is_some()
    }

    /// Whether the run has lasted a lease: others may be judged.
    fn may_judge(&self, now: Instant) -> bool {
        self.run
            .is_some_and(|(since, _)| now.saturating_duration_since(since) >= self.settings.lease)
    }
}

async fn run(store: Store, id: String, settings: Settings, stop: CancellationToken) {
    let lease_ms = settings.lease.as_millis() as i64;
    let mut tick = tokio::time::interval(settings.heartbeat);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    // The first tick is now: the row was just written at registration, which counts
    // as the first refresh of the streak.
    tick.tick().await;
    let mut streak = Streak::new(settings, Instant::now());
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let refreshed = tokio::select! {
            _ = stop.cancelled() => return,
            r = store.refresh_instance(&id) => r,
        };
        let now = Instant::now();
        match refreshed {
            Ok(present) => {
                if !present {
                    tracing::warn!(
                        instance = %id,
                        "this instance's row was gone: it was cut off from the database for longer than INSTANCE_LEASE_SECS and others took it for lost (the records of its calls then live were ended as instance-lost); registered again"
                    );
                }
                match streak.refreshed(now) {
                    Refresh::Continued => {}
                    Refresh::Late => {
                        tracing::warn!(instance = %id, "the heartbeat was late (the database was slow): judging no other instance for a lease")
                    }
                    Refresh::Resumed => {
                        tracing::info!(instance = %id, "the heartbeat reaches the database again: judging no other instance for a lease")
                    }
                }
            }
            Err(e) => {
                if streak.failed() {
                    tracing::warn!(instance = %id, error = %e, "the heartbeat failed: judging no other instance until it has worked for a lease");
                }
                continue;
            }
        }
        if !streak.may_judge(now) {
            continue;
        }
        match store
            .end_calls_of_lost_instances(&id, lease_ms, INSTANCE_LOST)
            .await
        {
            Ok(sweep) => {
                for (lost, calls) in &sweep.ended {
                    tracing::warn!(lost_instance = %lost, calls, "ended the calls of an instance lost for longer than INSTANCE_LEASE_SECS (instance-lost)");
                }
                if sweep.calls() > 0 {
                    metrics::counter!("voxgate_instance_lost_calls_total").increment(sweep.calls());
                }
                for lost in &sweep.removed {
                    tracing::info!(lost_instance = %lost, "removed the row of a lost instance");
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not sweep the calls of lost instances"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Settings = Settings {
        heartbeat: Duration::from_secs(10),
        lease: Duration::from_secs(60),
    };

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn others_are_judged_after_a_lease_of_unbroken_refreshes() {
        let t0 = Instant::now();
        let mut s = Streak::new(S, t0);
        for n in (10..60).step_by(10) {
            assert_eq!(s.refreshed(t0 + secs(n)), Refresh::Continued);
            assert!(!s.may_judge(t0 + secs(n)), "{n} s");
        }
        assert_eq!(s.refreshed(t0 + secs(60)), Refresh::Continued);
        assert!(s.may_judge(t0 + secs(60)));
        // A slow refresh within half a lease of the last still counts.
        assert_eq!(s.refreshed(t0 + secs(90)), Refresh::Continued);
        assert!(s.may_judge(t0 + secs(90)));
    }

    #[test]
    fn a_failed_refresh_starts_the_count_again() {
        let t0 = Instant::now();
        let mut s = Streak::new(S, t0);
        for n in (10..=100).step_by(10) {
            s.refreshed(t0 + secs(n));
        }
        assert!(s.may_judge(t0 + secs(100)));
        assert!(s.failed());
        assert!(!s.failed(), "already broken");
        assert!(
            !s.may_judge(t0 + secs(110)),
            "cut off from the database: no judging"
        );
        assert_eq!(s.refreshed(t0 + secs(120)), Refresh::Resumed);
        for n in (130..180).step_by(10) {
            s.refreshed(t0 + secs(n));
            assert!(
                !s.may_judge(t0 + secs(n)),
                "{n} s: less than a lease since the database came back"
            );
        }
        s.refreshed(t0 + secs(180));
        assert!(s.may_judge(t0 + secs(180)));
    }

    #[test]
    fn a_refresh_more_than_half_a_lease_late_starts_the_count_again() {
        let t0 = Instant::now();
        let mut s = Streak::new(S, t0);
        for n in (10..=100).step_by(10) {
            s.refreshed(t0 + secs(n));
        }
        // The database hung: the refresh took 5 minutes, and did not fail.
        assert_eq!(s.refreshed(t0 + secs(400)), Refresh::Late);
        assert!(!s.may_judge(t0 + secs(400)));
        for n in (410..460).step_by(10) {
            s.refreshed(t0 + secs(n));
            assert!(!s.may_judge(t0 + secs(n)), "{n} s");
        }
        s.refreshed(t0 + secs(460));
        assert!(s.may_judge(t0 + secs(460)));
    }

    #[test]
    fn the_lease_must_be_at_least_three_heartbeats() {
        let mut args = ServeArgs::for_tests("sqlite://unused.db");
        assert_eq!(Settings::from_args(&args).unwrap(), S, "the defaults");
        (args.instance_heartbeat_secs, args.instance_lease_secs) = (10, 29);
        let e = Settings::from_args(&args).unwrap_err().to_string();
        assert!(
            e.contains(
                "INSTANCE_LEASE_SECS (29) must be at least 3 times INSTANCE_HEARTBEAT_SECS (10)"
            ),
            "{e}"
        );
        (args.instance_heartbeat_secs, args.instance_lease_secs) = (1, 3);
        assert_eq!(
            Settings::from_args(&args).unwrap(),
            Settings {
                heartbeat: secs(1),
                lease: secs(3)
            }
        );
    }
}
