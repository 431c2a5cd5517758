//! The lasting fix for a reconnect loop (`fix_hba`, `fix_role`), checked
//! against everyone else connected now: a line is offered only when it would
//! shut out no other walsender that is healthy or protected. A
//! `pg_hba.conf` reject line shuts out every replication connection of its
//! role from its address, and `ALTER ROLE … NOREPLICATION` every one of its
//! role, whatever their `application_name`; HA tools and backup tools often
//! share one role (`replicator`) from one address, so the line that ends
//! the loop can just as well cut off a standby.

use crate::engine::{ClientKey, HoldReason, ReconnectLoop, Round};
use crate::policy::{Action, Policy};
use crate::snapshot::{Snapshot, Walsender};
use crate::sql::quote_ident;

/// A fix for a reconnect loop, or why there is none that is safe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fix {
    /// Paste it: it shuts out no walsender that is healthy or protected.
    Safe(String),
    /// No safe line: `line` would also shut out these walsenders.
    Unsafe {
        line: String,
        /// The walsenders it would cut off, described for the operator.
        would_cut: Vec<String>,
    },
    /// No line can be written (the role is unknown).
    None(String),
}

impl Fix {
    /// The line to paste, or "" when there is no safe one.
    pub fn safe_line(&self) -> &str {
        match self {
            Fix::Safe(line) => line,
            _ => "",
        }
    }
}

/// Both fixes for one loop.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoopAdvice {
    pub hba: Fix,
    pub role: Fix,
}

impl LoopAdvice {
    /// The operator's instructions in one sentence or a few.
    pub fn text(&self, client: &ClientKey) -> String {
        let role = quote_ident(&client.user);
        let mut out = Vec::new();
        match &self.hba {
            Fix::Safe(line) => out.push(format!(
                "To keep it out for good, add `{line}` to pg_hba.conf before the line that admits it and SELECT pg_reload_conf();"
            )),
            Fix::Unsafe { line, would_cut } => out.push(format!(
                "No safe pg_hba.conf line: `{line}` would also shut out {}.",
                would_cut.join(", ")
            )),
            Fix::None(why) => out.push(format!("No pg_hba.conf line: {why}.")),
        }
        match &self.role {
            Fix::Safe(line) => out.push(format!(
                "Or, as no other walsender uses role {role}: {line}"
            )),
            Fix::Unsafe { line, would_cut } => out.push(format!(
                "No safe role change: `{line}` would also shut out {}.",
                would_cut.join(", ")
            )),
            Fix::None(why) => out.push(format!("No role change: {why}.")),
        }
        if !matches!(self.hba, Fix::Safe(_)) && !matches!(self.role, Fix::Safe(_)) {
            out.push(format!(
                "To make one safe, give this client its own role (CREATE ROLE <name> LOGIN REPLICATION; and that role \
                 in its connection settings, instead of {role}): then a line for that role shuts out it alone. Until \
                 then, stop it where it runs."
            ));
        }
        out.join(" ")
    }
}

/// What to advise for `l`, given who else is connected in `snapshot` and
/// what `round` is acting on.
pub fn for_loop(
    l: &ReconnectLoop,
    snapshot: &Snapshot,
    round: &Round,
    policy: &Policy,
) -> LoopAdvice {
    let c = &l.client;
    if c.user.is_empty() {
        let why = "the client's role is not known (its role was dropped before replwarden saw it)"
            .to_string();
        return LoopAdvice {
            hba: Fix::None(why.clone()),
            role: Fix::None(why),
        };
    }
    let role = quote_ident(&c.user);
    let hba_line = if c.client_addr == "local" {
        format!("local replication {role} reject")
    } else {
        let bits = if c.client_addr.contains(':') { 128 } else { 32 };
        format!("host replication {role} {}/{bits} reject", c.client_addr)
    };
    let role_line = format!("ALTER ROLE {role} NOREPLICATION;");
    let same_role: Vec<&Walsender> = snapshot
        .walsenders
        .iter()
        .filter(|ws| ws.user.as_deref() == Some(c.user.as_str()))
        .filter(|ws| bystander(ws, c, round, policy))
        .collect();
    let same_addr: Vec<&Walsender> = same_role
        .iter()
        .copied()
        .filter(|ws| ws.client_addr.to_string() == c.client_addr)
        .collect();
    LoopAdvice {
        hba: judge(hba_line, &same_addr, policy),
        role: judge(role_line, &same_role, policy),
    }
}

/// A walsender of the looping client's role that a fix must not cut off:
/// one `[protect]` covers, or another client that nothing is acting on
/// now (a healthy one, as far as the rules can tell). One the quorum guard
/// holds back still counts: the server needs it.
fn bystander(ws: &Walsender, client: &ClientKey, round: &Round, policy: &Policy) -> bool {
    if policy.protects(ws) {
        return true;
    }
    let same_client = ws.application_name == client.application_name
        && ws.client_addr.to_string() == client.client_addr;
    let held = round
        .held
        .iter()
        .filter(|h| !matches!(h.reason, HoldReason::SyncQuorum { .. }))
        .map(|h| &h.decision);
    let targeted = round
        .decisions
        .iter()
        .chain(held)
        .any(|d| d.action != Action::Log && d.walsender.id == ws.id);
    !same_client && !targeted
}

fn judge(line: String, cut: &[&Walsender], policy: &Policy) -> Fix {
    if cut.is_empty() {
        return Fix::Safe(line);
    }
    Fix::Unsafe {
        line,
        would_cut: cut
            .iter()
            .map(|ws| {
                format!(
                    "{:?} (pid {}, from {}{})",
                    ws.application_name,
                    ws.id.pid,
                    ws.client_addr,
                    if policy.protects(ws) {
                        ", protected"
                    } else {
                        ", healthy"
                    }
                )
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;
    use crate::engine;
    use crate::fixtures::{snapshot as snap, walsender};
    use crate::snapshot::ClientAddr;
    use crate::units::ByteSize;
    use std::path::Path;
    use std::time::{Duration, Instant};

    fn ws(pid: i32, app: &str, user: &str, addr: &str) -> Walsender {
        Walsender {
            age: Duration::from_secs(60),
            user: Some(user.to_string()),
            client_addr: if addr == "local" {
                ClientAddr::Local
            } else {
                ClientAddr::Ip(addr.parse().unwrap())
            },
            ..walsender(pid, app)
        }
    }

    const BLOCK_ROGUE: &str = r#"
[limits]
reconnect_backoff = "0s"

[[rule]]
name = "no-rogue"
application_name = ["rogue*"]
action = "terminate"
"#;

    /// Tells the engine its decisions were carried out, as the daemon does.
    fn record_done(r: &engine::Round, memory: &mut engine::Memory, policy: &crate::policy::Policy) {
        for d in &r.decisions {
            memory.record(d, engine::Delivery::Done, &policy.limits);
        }
    }

    /// Runs the engine until the rogue loops; returns the loop's advice.
    fn advice(toml: &str, others: Vec<Walsender>, rogue: Walsender) -> LoopAdvice {
        let policy = config::parse(Path::new("t.toml"), toml).unwrap().policy;
        let mut memory = engine::Memory::default();
        let t0 = Instant::now();
        let mut first = others.clone();
        first.push(rogue.clone());
        let r = engine::decide(&policy, &snap(first), &mut memory, t0);
        assert_eq!(r.decisions.len(), 1, "the rogue is acted on");
        record_done(&r, &mut memory, &policy);
        let mut again = rogue;
        again.id.pid += 1000;
        again.id.backend_start += Duration::from_secs(5);
        let mut second = others;
        second.push(again);
        let s = snap(second);
        let r = engine::decide(&policy, &s, &mut memory, t0 + Duration::from_secs(5));
        assert_eq!(r.loops.len(), 1, "a reconnect loop");
        for_loop(&r.loops[0], &s, &r, &policy)
    }

    #[test]
    fn alone_in_its_role_both_fixes_are_safe() {
        let a = advice(
            BLOCK_ROGUE,
            vec![ws(10, "pgnode2", "patroni_repl", "127.0.0.1")],
            ws(20, "rogue_tool", "replicator", "127.0.0.1"),
        );
        assert_eq!(
            a.hba,
            Fix::Safe("host replication replicator 127.0.0.1/32 reject".into())
        );
        assert_eq!(
            a.role,
            Fix::Safe("ALTER ROLE replicator NOREPLICATION;".into())
        );
    }

    #[test]
    fn a_healthy_standby_of_the_same_role_and_address_blocks_both_fixes() {
        // The field case: Patroni's standby replicates as replicator from
        // the rogue's address.
        let a = advice(
            BLOCK_ROGUE,
            vec![ws(10, "pgnode2", "replicator", "127.0.0.1")],
            ws(20, "rogue_tool", "replicator", "127.0.0.1"),
        );
        assert!(
            matches!(&a.hba, Fix::Unsafe { would_cut, .. } if would_cut[0].contains("pgnode2") && would_cut[0].contains("healthy")),
            "{a:?}"
        );
        assert!(matches!(&a.role, Fix::Unsafe { .. }), "{a:?}");
        assert_eq!(a.hba.safe_line(), "");
        assert_eq!(a.role.safe_line(), "");
        let text = a.text(&ClientKey {
            application_name: "rogue_tool".into(),
            client_addr: "127.0.0.1".into(),
            user: "replicator".into(),
        });
        assert!(text.contains("give this client its own role"), "{text}");
        assert!(!text.contains("add `"), "no line to paste: {text}");
    }

    #[test]
    fn same_role_from_another_address_blocks_only_the_role_fix() {
        let a = advice(
            BLOCK_ROGUE,
            vec![ws(10, "pgnode2", "replicator", "10.0.0.2")],
            ws(20, "rogue_tool", "replicator", "10.0.0.9"),
        );
        assert_eq!(
            a.hba,
            Fix::Safe("host replication replicator 10.0.0.9/32 reject".into())
        );
        assert!(matches!(a.role, Fix::Unsafe { .. }), "{a:?}");
    }

    #[test]
    fn a_protected_walsender_counts_even_when_a_rule_targets_it() {
        // "all-of-replicator" would act on the standby, but [protect] wins:
        // the standby stays, so a line cutting it off is no fix.
        let toml = format!(
            "[protect]\napplication_name = [\"pgnode*\"]\n{BLOCK_ROGUE}\n[[rule]]\nname = \"all\"\nuser = [\"replicator\"]\nwrite_lag_bytes = \"1GB\"\naction = \"terminate\"\n"
        );
        let a = advice(
            &toml,
            vec![ws(10, "pgnode2", "replicator", "local")],
            ws(20, "rogue_tool", "replicator", "local"),
        );
        assert!(
            matches!(&a.hba, Fix::Unsafe { would_cut, .. } if would_cut[0].contains("protected")),
            "{a:?}"
        );
        assert!(matches!(a.role, Fix::Unsafe { .. }), "{a:?}");
    }

    #[test]
    fn other_walsenders_being_acted_on_do_not_count() {
        // A second rogue of the same role, acted on in the same round, is
        // not healthy: the line may shut it out too.
        let a = advice(
            BLOCK_ROGUE,
            vec![],
            ws(20, "rogue_tool", "replicator", "127.0.0.1"),
        );
        assert!(matches!(a.role, Fix::Safe(_)));
        let policy = config::parse(Path::new("t.toml"), BLOCK_ROGUE)
            .unwrap()
            .policy;
        let mut memory = engine::Memory::default();
        let t0 = Instant::now();
        let s1 = snap(vec![ws(20, "rogue_a", "replicator", "127.0.0.1")]);
        let r = engine::decide(&policy, &s1, &mut memory, t0);
        record_done(&r, &mut memory, &policy);
        let s2 = snap(vec![
            ws(21, "rogue_a", "replicator", "127.0.0.1"),
            ws(22, "rogue_b", "replicator", "127.0.0.1"),
        ]);
        let r = engine::decide(&policy, &s2, &mut memory, t0 + Duration::from_secs(5));
        assert_eq!(r.loops.len(), 1);
        let a = for_loop(&r.loops[0], &s2, &r, &policy);
        assert!(matches!(a.hba, Fix::Safe(_)), "{a:?}");
        assert!(matches!(a.role, Fix::Safe(_)), "{a:?}");
    }

    #[test]
    fn a_sync_standby_the_quorum_guard_keeps_counts_even_when_a_rule_wants_it() {
        // FIRST 1 (pgnode2): the guard holds the lag rule's terminate of
        // pgnode2 back, so a line that shuts it out would stall commits.
        let toml = format!(
            "{BLOCK_ROGUE}\n[[rule]]\nname = \"behind\"\napplication_name = [\"pgnode*\"]\nwrite_lag_bytes = \"1kB\"\naction = \"terminate\"\n"
        );
        let policy = config::parse(Path::new("t.toml"), &toml).unwrap().policy;
        let mut memory = engine::Memory::default();
        let t0 = Instant::now();
        let mut standby = ws(10, "pgnode2", "replicator", "127.0.0.1");
        standby.sync_state = Some("sync".to_string());
        standby.write_lag_bytes = Some(ByteSize(4096));
        let sync_snap = |walsenders| Snapshot {
            synchronous_standby_names: "FIRST 1 (pgnode2)".to_string(),
            ..snap(walsenders)
        };
        let s1 = sync_snap(vec![
            standby.clone(),
            ws(20, "rogue_a", "replicator", "127.0.0.1"),
        ]);
        let r = engine::decide(&policy, &s1, &mut memory, t0);
        record_done(&r, &mut memory, &policy);
        let s2 = sync_snap(vec![standby, ws(21, "rogue_a", "replicator", "127.0.0.1")]);
        let r = engine::decide(&policy, &s2, &mut memory, t0 + Duration::from_secs(5));
        assert!(
            r.held
                .iter()
                .any(|h| matches!(h.reason, HoldReason::SyncQuorum { .. })),
            "the guard holds pgnode2: {:?}",
            r.held
        );
        assert_eq!(r.loops.len(), 1);
        let a = for_loop(&r.loops[0], &s2, &r, &policy);
        assert!(matches!(a.hba, Fix::Unsafe { .. }), "{a:?}");
        assert!(matches!(a.role, Fix::Unsafe { .. }), "{a:?}");
    }

    #[test]
    fn an_unknown_role_gets_no_line() {
        let mut rogue = ws(20, "rogue_tool", "replicator", "127.0.0.1");
        rogue.user = None;
        let a = advice(BLOCK_ROGUE, vec![], rogue);
        assert!(
            matches!(a.hba, Fix::None(_)) && matches!(a.role, Fix::None(_)),
            "{a:?}"
        );
    }
}
