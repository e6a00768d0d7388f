//! The reference graph of a registry snapshot and its restore order (Kahn's algorithm): every
//! schema version comes after the versions it references. Cycles and references to versions the
//! registry does not have are reported with the subjects involved.

use std::collections::{BTreeMap, BTreeSet};

pub use crate::format::schema_registry::SubjectVersion;

/// A node: a schema version, its global ID (to break ties: lower IDs first, as the source
/// registry assigned them) and what it references.
#[derive(Debug, Clone)]
pub struct Node {
    pub at: SubjectVersion,
    pub id: u32,
    pub references: Vec<SubjectVersion>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Order {
    /// Every node whose references could be ordered, referenced versions first.
    pub order: Vec<SubjectVersion>,
    /// Whether every node is in `order`.
    pub complete: bool,
    /// What kept nodes out: missing references and cycles, each with the subjects involved.
    pub problems: Vec<String>,
}

pub fn restore_order(nodes: &[Node]) -> Order {
    let known: BTreeMap<&SubjectVersion, &Node> = nodes.iter().map(|n| (&n.at, n)).collect();
    let mut problems = Vec::new();
    // A node whose reference is missing cannot be restored, nor can anything that needs it.
    let mut blocked: BTreeSet<&SubjectVersion> = BTreeSet::new();
    for n in nodes {
        for r in &n.references {
            if !known.contains_key(r) {
                problems.push(format!(
                    "{} references {r}, which the registry does not have",
                    n.at
                ));
                blocked.insert(&n.at);
            }
        }
    }
    let mut indegree: BTreeMap<&SubjectVersion, usize> = BTreeMap::new();
    let mut dependents: BTreeMap<&SubjectVersion, Vec<&SubjectVersion>> = BTreeMap::new();
    for n in nodes {
        let refs: BTreeSet<&SubjectVersion> = n
            .references
            .iter()
            .filter(|r| known.contains_key(r))
            .collect();
        indegree.insert(&n.at, refs.len());
        for r in refs {
            dependents.entry(r).or_default().push(&n.at);
        }
    }
    // Ready nodes by (ID, subject, version): deterministic, and close to the source's ID order.
    let key = |sv: &SubjectVersion| (known[sv].id, sv.clone());
    let mut ready: BTreeSet<(u32, SubjectVersion)> = indegree
        .iter()
        .filter(|(sv, d)| **d == 0 && !blocked.contains(*sv))
        .map(|(sv, _)| key(sv))
        .collect();
    let mut order = Vec::with_capacity(nodes.len());
    while let Some((_, sv)) = ready.pop_first() {
        if let Some(ds) = dependents.get(&sv) {
            for d in ds {
                let e = indegree.get_mut(d).expect("every dependent is a node");
                *e -= 1;
                if *e == 0 && !blocked.contains(d) {
                    ready.insert(key(d));
                }
            }
        }
        order.push(sv);
    }
    let placed: BTreeSet<&SubjectVersion> = order.iter().collect();
    let left: BTreeSet<&SubjectVersion> = known
        .keys()
        .copied()
        .filter(|sv| !placed.contains(sv))
        .collect();
    // Report each cycle once, as a path.
    let mut reported: BTreeSet<&SubjectVersion> = BTreeSet::new();
    for start in &left {
        if reported.contains(start) || blocked.contains(start) {
            continue;
        }
        if let Some(cycle) = find_cycle(start, &known, &left) {
            for sv in &cycle {
                reported.insert(sv);
            }
            let path: Vec<String> = cycle
                .iter()
                .chain(cycle.first())
                .map(|sv| sv.to_string())
                .collect();
            problems.push(format!("reference cycle: {}", path.join(" -> ")));
        }
    }
    let waiting: Vec<String> = left
        .iter()
        .filter(|sv| !reported.contains(*sv) && !blocked.contains(*sv))
        .map(|sv| sv.to_string())
        .collect();
    if !waiting.is_empty() {
        problems.push(format!(
            "not orderable because they depend on the above: {}",
            waiting.join(", ")
        ));
    }
    Order {
        complete: left.is_empty(),
        order,
        problems,
    }
}

/// A cycle through `start` (or reachable from it) among the unplaced nodes.
fn find_cycle<'a>(
    start: &'a SubjectVersion,
    known: &BTreeMap<&'a SubjectVersion, &'a Node>,
    left: &BTreeSet<&'a SubjectVersion>,
) -> Option<Vec<&'a SubjectVersion>> {
    let mut path: Vec<&SubjectVersion> = vec![start];
    let mut on_path: BTreeSet<&SubjectVersion> = BTreeSet::from([start]);
    let mut cur = start;
    // Every unplaced node that is not blocked has an unplaced reference; follow one until a node
    // repeats.
    for _ in 0..=left.len() {
        let next = known[cur]
            .references
            .iter()
            .filter_map(|r| known.get_key_value(r).map(|(k, _)| *k))
            .find(|r| left.contains(r))?;
        if on_path.contains(next) {
            let i = path.iter().position(|p| *p == next).expect("on the path");
            return Some(path[i..].to_vec());
        }
        path.push(next);
        on_path.insert(next);
        cur = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sv(s: &str, v: i32) -> SubjectVersion {
        SubjectVersion {
            subject: s.into(),
            version: v,
        }
    }

    fn node(s: &str, v: i32, id: u32, refs: &[(&str, i32)]) -> Node {
        Node {
            at: sv(s, v),
            id,
            references: refs.iter().map(|(s, v)| sv(s, *v)).collect(),
        }
    }

    #[test]
    fn referenced_versions_come_first() {
        let nodes = vec![
            node(
                "orders-value",
                1,
                1,
                &[("common-money-value", 1), ("common-address-value", 1)],
            ),
            node("common-address-value", 1, 3, &[]),
            node("common-money-value", 1, 2, &[]),
            node("orders-value", 2, 4, &[("common-money-value", 1)]),
        ];
        let o = restore_order(&nodes);
        assert!(o.complete, "{:?}", o.problems);
        let pos = |s: &str, v: i32| o.order.iter().position(|x| *x == sv(s, v)).unwrap();
        assert!(pos("common-money-value", 1) < pos("orders-value", 1));
        assert!(pos("common-address-value", 1) < pos("orders-value", 1));
        assert!(pos("common-money-value", 1) < pos("orders-value", 2));
        assert_eq!(
            o.order[0],
            sv("common-money-value", 1),
            "lowest ID first among the ready"
        );
    }

    #[test]
    fn cycles_and_missing_references_are_reported_with_their_subjects() {
        let nodes = vec![
            node("a", 1, 1, &[("b", 1)]),
            node("b", 1, 2, &[("c", 1)]),
            node("c", 1, 3, &[("a", 1)]),
            node("d", 1, 4, &[("a", 1)]),
            node("e", 1, 5, &[("gone", 7)]),
            node("f", 1, 6, &[]),
        ];
        let o = restore_order(&nodes);
        assert!(!o.complete);
        assert_eq!(o.order, vec![sv("f", 1)]);
        assert!(
            o.problems
                .iter()
                .any(|p| p == "e v1 references gone v7, which the registry does not have"),
            "{:?}",
            o.problems
        );
        assert!(
            o.problems.iter().any(|p| p.starts_with("reference cycle: ")
                && p.contains("a v1 -> b v1 -> c v1 -> a v1")),
            "{:?}",
            o.problems
        );
        assert!(
            o.problems.iter().any(|p| p.contains("d v1")),
            "{:?}",
            o.problems
        );
    }
}
