//! Who a walsender replicates as, remembered from the first sight of each
//! process instance. `DROP ROLE` of a role whose walsender is streaming is
//! allowed and leaves the stream running; from then on `pg_stat_replication`
//! shows `usename` NULL (`usesysid` keeps the oid, which no catalog names
//! any more). A `user` rule would stop matching and a `user` protect entry
//! would stop protecting. The daemon keeps judging such a walsender by the
//! role it was seen with; a walsender whose role was gone before the daemon
//! first saw it has no name to go by, and is reported.

use rustc_hash::{FxHashMap, FxHashSet};

use crate::snapshot::{Snapshot, WalsenderId};

/// The role of every walsender seen, by process instance. The sets are
/// keyed by `(pid, backend_start)`, which the server assigns, not a
/// client: a fast hasher (SipHash was a tenth of the daemon's
/// instructions per poll, BENCHMARKS.md).
#[derive(Debug, Default)]
pub struct Roles {
    known: FxHashMap<WalsenderId, String>,
    /// Instances already reported as having lost their role.
    reported: FxHashSet<WalsenderId>,
}

/// A walsender seen without its role for the first time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    pub id: WalsenderId,
    pub application_name: String,
    /// The role it was seen with before, now used in its place; `None` when
    /// it was gone before the daemon first saw this walsender.
    pub remembered: Option<String>,
}

impl Roles {
    /// Puts the remembered role into the rows whose role was dropped, and
    /// returns those seen so for the first time. Instances no longer in
    /// `snapshot` are forgotten (every walsender of a visible row has a
    /// `usename` unless its role is gone: rows the daemon's role may not
    /// read are in `Snapshot::hidden`, not here).
    pub fn fill(&mut self, snapshot: &mut Snapshot) -> Vec<Dropped> {
        let present: FxHashSet<WalsenderId> = snapshot.walsenders.iter().map(|ws| ws.id).collect();
        self.known.retain(|id, _| present.contains(id));
        self.reported.retain(|id| present.contains(id));
        let mut news = Vec::new();
        for ws in &mut snapshot.walsenders {
            match &ws.user {
                Some(user) => {
                    self.known.entry(ws.id).or_insert_with(|| user.clone());
                }
                None => {
                    let remembered = self.known.get(&ws.id).cloned();
                    ws.user.clone_from(&remembered);
                    if self.reported.insert(ws.id) {
                        news.push(Dropped {
                            id: ws.id,
                            application_name: ws.application_name.clone(),
                            remembered,
                        });
                    }
                }
            }
        }
        news
    }
}

/// How `plan` (one poll, nothing remembered) shows a walsender's role.
pub fn shown(user: Option<&str>) -> &str {
    user.unwrap_or("NULL (its role was dropped while it streams: `user` rules and protect entries cannot match it here; the daemon goes on using the name it saw before the drop)")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{nulled, walsender};
    use crate::snapshot::{ClientAddr, Walsender};
    use std::time::Duration;

    fn ws(pid: i32, user: Option<&str>) -> Walsender {
        Walsender {
            application_name: format!("app{pid}"),
            user: user.map(str::to_string),
            client_addr: ClientAddr::Local,
            state: Some("streaming".into()),
            sync_state: Some("async".to_string()),
            ..nulled(walsender(pid, ""))
        }
    }

    fn snap(walsenders: Vec<Walsender>) -> Snapshot {
        Snapshot {
            walsenders,
            ..Snapshot::default()
        }
    }

    #[test]
    fn a_dropped_role_keeps_the_name_it_was_seen_with() {
        let mut roles = Roles::default();
        let mut s = snap(vec![ws(1, Some("doomed")), ws(2, Some("replicator"))]);
        assert!(roles.fill(&mut s).is_empty());
        let mut s = snap(vec![ws(1, None), ws(2, Some("replicator"))]);
        let news = roles.fill(&mut s);
        assert_eq!(news.len(), 1);
        assert_eq!(news[0].remembered.as_deref(), Some("doomed"));
        assert_eq!(s.walsenders[0].user.as_deref(), Some("doomed"));
        // Reported once per instance, filled in every time.
        let mut s = snap(vec![ws(1, None)]);
        assert!(roles.fill(&mut s).is_empty());
        assert_eq!(s.walsenders[0].user.as_deref(), Some("doomed"));
    }

    #[test]
    fn unknown_before_the_drop_stays_unknown_and_a_new_instance_starts_afresh() {
        let mut roles = Roles::default();
        let mut s = snap(vec![ws(3, None)]);
        let news = roles.fill(&mut s);
        assert_eq!(news[0].remembered, None);
        assert_eq!(s.walsenders[0].user, None);
        // Same pid, new process instance: nothing carries over.
        let mut roles = Roles::default();
        roles.fill(&mut snap(vec![ws(4, Some("doomed"))]));
        let mut reborn = ws(4, None);
        reborn.id.backend_start += Duration::from_secs(1);
        let mut s = snap(vec![reborn]);
        assert_eq!(roles.fill(&mut s)[0].remembered, None);
    }
}
