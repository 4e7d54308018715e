//! Container dependency logic (`dependsOn`, plus the implicit ordering `links` and
//! `volumesFrom` need): when a dependency is met, when it can never be met, and in which order
//! to create and to stop containers. Pure functions.

/// A `dependsOn` condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Condition {
    /// The dependency has been started.
    Start,
    /// The dependency ran and exited (any code).
    Complete,
    /// The dependency ran and exited with code 0.
    Success,
    /// The dependency's health check reported healthy.
    Healthy,
}

impl Condition {
    pub fn parse(s: &str) -> Option<Condition> {
        match s.to_ascii_uppercase().as_str() {
            "START" => Some(Condition::Start),
            "COMPLETE" => Some(Condition::Complete),
            "SUCCESS" => Some(Condition::Success),
            "HEALTHY" => Some(Condition::Healthy),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::Start => "START",
            Condition::Complete => "COMPLETE",
            Condition::Success => "SUCCESS",
            Condition::Healthy => "HEALTHY",
        }
    }
}

/// What the dependency logic needs to know about the container depended on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DepView {
    /// It has been started (it may have exited since).
    pub started: bool,
    /// It will not run (any more): it exited, or it was given up before starting.
    pub stopped: bool,
    pub exit_code: Option<i64>,
    pub has_healthcheck: bool,
    /// Its health check has reported healthy at least once.
    pub healthy_seen: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DepOutcome {
    Satisfied,
    Waiting,
    /// Can never be met; the text says why (the dependency's name comes first).
    Failed(String),
}

/// Whether `condition` on the container `dep_name` (in state `dep`) is met.
pub fn evaluate(condition: Condition, dep_name: &str, dep: &DepView) -> DepOutcome {
    use DepOutcome::*;
    let never_started = || Failed(format!("{dep_name} stopped without having started"));
    match condition {
        Condition::Start => {
            if dep.started {
                Satisfied
            } else if dep.stopped {
                never_started()
            } else {
                Waiting
            }
        }
        Condition::Complete => match (dep.started, dep.stopped) {
            (true, true) => Satisfied,
            (false, true) => never_started(),
            _ => Waiting,
        },
        Condition::Success => match (dep.started, dep.stopped) {
            (true, true) if dep.exit_code == Some(0) => Satisfied,
            (true, true) => Failed(match dep.exit_code {
                Some(code) => format!("{dep_name} exited with code {code}"),
                None => format!("{dep_name} stopped without an exit code"),
            }),
            (false, true) => never_started(),
            _ => Waiting,
        },
        Condition::Healthy => {
            if !dep.has_healthcheck {
                Failed(format!("{dep_name} has no health check"))
            } else if dep.healthy_seen {
                Satisfied
            } else if dep.stopped {
                Failed(format!("{dep_name} stopped before it was healthy"))
            } else {
                Waiting
            }
        }
    }
}

/// An order in which every container comes after the ones it depends on (`deps[i]` lists the
/// indexes `i` depends on). Containers in a cycle come last, in index order.
pub fn creation_order(deps: &[Vec<usize>]) -> Vec<usize> {
    let n = deps.len();
    let mut placed = vec![false; n];
    let mut order = Vec::with_capacity(n);
    loop {
        let mut progressed = false;
        for i in 0..n {
            if !placed[i] && deps[i].iter().all(|&d| d >= n || placed[d] || d == i) {
                placed[i] = true;
                order.push(i);
                progressed = true;
            }
        }
        if !progressed {
            break;
        }
    }
    order.extend((0..n).filter(|&i| !placed[i]));
    order
}

/// Waves in which to stop the `alive` containers: a container is stopped only after every
/// alive container that depends on it (reverse dependency order). Containers in a cycle end
/// up together in the last wave.
pub fn stop_waves(deps: &[Vec<usize>], alive: &[bool]) -> Vec<Vec<usize>> {
    let n = deps.len();
    let mut remaining: Vec<bool> = (0..n)
        .map(|i| alive.get(i).copied().unwrap_or(false))
        .collect();
    let mut waves = Vec::new();
    while remaining.iter().any(|r| *r) {
        let wave: Vec<usize> = (0..n)
            .filter(|&i| remaining[i])
            .filter(|&i| !(0..n).any(|k| k != i && remaining[k] && deps[k].contains(&i)))
            .collect();
        let wave = if wave.is_empty() {
            (0..n).filter(|&i| remaining[i]).collect()
        } else {
            wave
        };
        for &i in &wave {
            remaining[i] = false;
        }
        waves.push(wave);
    }
    waves
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(started: bool, stopped: bool, code: Option<i64>) -> DepView {
        DepView {
            started,
            stopped,
            exit_code: code,
            ..Default::default()
        }
    }

    #[test]
    fn conditions() {
        use DepOutcome::*;
        let pending = view(false, false, None);
        let running = view(true, false, None);
        let ok = view(true, true, Some(0));
        let failed = view(true, true, Some(1));
        let abandoned = view(false, true, None);

        assert_eq!(evaluate(Condition::Start, "a", &pending), Waiting);
        assert_eq!(evaluate(Condition::Start, "a", &running), Satisfied);
        assert_eq!(evaluate(Condition::Start, "a", &failed), Satisfied);
        assert!(matches!(
            evaluate(Condition::Start, "a", &abandoned),
            Failed(_)
        ));

        assert_eq!(evaluate(Condition::Complete, "a", &running), Waiting);
        assert_eq!(evaluate(Condition::Complete, "a", &failed), Satisfied);
        assert!(matches!(
            evaluate(Condition::Complete, "a", &abandoned),
            Failed(_)
        ));

        assert_eq!(evaluate(Condition::Success, "a", &running), Waiting);
        assert_eq!(evaluate(Condition::Success, "a", &ok), Satisfied);
        assert_eq!(
            evaluate(Condition::Success, "init", &failed),
            Failed("init exited with code 1".into())
        );

        let mut h = running.clone();
        assert_eq!(
            evaluate(Condition::Healthy, "db", &h),
            Failed("db has no health check".into())
        );
        h.has_healthcheck = true;
        assert_eq!(evaluate(Condition::Healthy, "db", &h), Waiting);
        h.healthy_seen = true;
        assert_eq!(evaluate(Condition::Healthy, "db", &h), Satisfied);
        let dead = DepView {
            has_healthcheck: true,
            ..failed
        };
        assert!(matches!(
            evaluate(Condition::Healthy, "db", &dead),
            Failed(_)
        ));

        assert_eq!(Condition::parse("success"), Some(Condition::Success));
        assert_eq!(Condition::parse("nope"), None);
    }

    #[test]
    fn orders() {
        // 0 depends on 1, 1 depends on 2; 3 independent.
        let deps = vec![vec![1], vec![2], vec![], vec![]];
        assert_eq!(creation_order(&deps), vec![2, 3, 1, 0]);
        assert_eq!(
            stop_waves(&deps, &[true, true, true, true]),
            vec![vec![0, 3], vec![1], vec![2]]
        );
        // A dead dependent does not hold its dependency back.
        assert_eq!(
            stop_waves(&deps, &[false, true, true, false]),
            vec![vec![1], vec![2]]
        );
        // Cycle: both in the last wave, both created at the end.
        let cyc = vec![vec![1], vec![0], vec![]];
        assert_eq!(creation_order(&cyc), vec![2, 0, 1]);
        assert_eq!(
            stop_waves(&cyc, &[true, true, true]),
            vec![vec![2], vec![0, 1]]
        );
    }
}
