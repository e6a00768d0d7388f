//! Two record streams walked side by side in order: each archived record matched with the
//! target's next one, a record that is only on one side found within a window ahead, so that one
//! missing or extra record is reported as such and not as every record after it differing.
//! Memory: the window, on each side.

use std::collections::VecDeque;

/// What the walk found for a record (or a pair).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome<R> {
    Equal {
        archive: R,
        target: R,
    },
    /// The pair at the same place differs in these fields.
    Different {
        archive: R,
        target: R,
        fields: Vec<&'static str>,
    },
    /// In the archive, not on the target.
    Missing(R),
    /// On the target, not in the archive.
    Extra(R),
}

/// The fields in which two records differ (none: they are the same).
pub type FieldsDiffer<'f, R, E> = dyn FnMut(&R, &R) -> Result<Vec<&'static str>, E> + 'f;

/// A side's records, one at a time.
pub trait Records<R, E> {
    fn next_record(&mut self) -> Result<Option<R>, E>;
}

/// Walks both sides to their ends. `diff` names the fields in which two records differ (none:
/// equal). `window`: how far ahead a record is looked for on the other side.
pub fn align<R: Clone, E>(
    archive: &mut dyn Records<R, E>,
    target: &mut dyn Records<R, E>,
    window: usize,
    diff: &mut FieldsDiffer<'_, R, E>,
    found: &mut dyn FnMut(Outcome<R>),
) -> Result<(), E> {
    let (mut a, mut t) = (VecDeque::new(), VecDeque::new());
    loop {
        fill(archive, &mut a, window)?;
        fill(target, &mut t, window)?;
        let (Some(x), Some(y)) = (a.front(), t.front()) else {
            a.drain(..).for_each(|r| found(Outcome::Missing(r)));
            t.drain(..).for_each(|r| found(Outcome::Extra(r)));
            if fill(archive, &mut a, 1)? + fill(target, &mut t, 1)? == 0 {
                return Ok(());
            }
            continue;
        };
        let fields = diff(x, y)?;
        if fields.is_empty() {
            let (archive, target) = (a.pop_front().unwrap(), t.pop_front().unwrap());
            found(Outcome::Equal { archive, target });
            continue;
        }
        // The archive's record further on the target: the target's records before it are extra.
        if let Some(k) = position(&t, 1, |c| Ok(diff(x, c)?.is_empty()))? {
            t.drain(..k).for_each(|r| found(Outcome::Extra(r)));
            continue;
        }
        // The target's record further in the archive: the archive's before it are missing.
        if let Some(k) = position(&a, 1, |c| Ok(diff(c, y)?.is_empty()))? {
            a.drain(..k).for_each(|r| found(Outcome::Missing(r)));
            continue;
        }
        let (archive, target) = (a.pop_front().unwrap(), t.pop_front().unwrap());
        found(Outcome::Different {
            archive,
            target,
            fields,
        });
    }
}

/// Tops `q` up to `n` records; how many came.
fn fill<R, E>(side: &mut dyn Records<R, E>, q: &mut VecDeque<R>, n: usize) -> Result<usize, E> {
    let mut added = 0;
    while q.len() < n {
        match side.next_record()? {
            Some(r) => {
                q.push_back(r);
                added += 1;
            }
            None => break,
        }
    }
    Ok(added)
}

fn position<R, E>(
    q: &VecDeque<R>,
    from: usize,
    mut pred: impl FnMut(&R) -> Result<bool, E>,
) -> Result<Option<usize>, E> {
    for (i, r) in q.iter().enumerate().skip(from) {
        if pred(r)? {
            return Ok(Some(i));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct V(std::vec::IntoIter<(i64, &'static str)>);

    impl Records<(i64, &'static str), ()> for V {
        fn next_record(&mut self) -> Result<Option<(i64, &'static str)>, ()> {
            Ok(self.0.next())
        }
    }

    fn run(a: Vec<(i64, &'static str)>, t: Vec<(i64, &'static str)>) -> Vec<String> {
        let mut out = Vec::new();
        let mut diff =
            |x: &(i64, &str), y: &(i64, &str)| Ok(if x.1 == y.1 { vec![] } else { vec!["value"] });
        align(
            &mut V(a.into_iter()),
            &mut V(t.into_iter()),
            4,
            &mut diff,
            &mut |o| {
                out.push(match o {
                    Outcome::Equal { .. } => "=".into(),
                    Outcome::Different {
                        archive, target, ..
                    } => {
                        format!("{}~{}", archive.0, target.0)
                    }
                    Outcome::Missing(r) => format!("-{}", r.0),
                    Outcome::Extra(r) => format!("+{}", r.0),
                })
            },
        )
        .unwrap();
        out
    }

    #[test]
    fn one_missing_one_extra_and_one_changed_record_are_named_as_such() {
        let a = vec![(0, "a"), (1, "b"), (2, "c"), (3, "d"), (4, "e"), (5, "f")];
        // b is missing, x is extra after d, f changed to F; offsets differ on the target.
        let t = vec![
            (10, "a"),
            (11, "c"),
            (12, "d"),
            (13, "x"),
            (14, "e"),
            (15, "F"),
        ];
        assert_eq!(run(a, t), ["=", "-1", "=", "=", "+13", "=", "5~15"]);
    }

    #[test]
    fn the_ends_missing_or_extra() {
        assert_eq!(run(vec![(0, "a"), (1, "b")], vec![(0, "a")]), ["=", "-1"]);
        assert_eq!(run(vec![], vec![(0, "a"), (1, "b")]), ["+0", "+1"]);
        let many: Vec<_> = (0..10).map(|i| (i, "z")).collect();
        assert_eq!(run(many, vec![]).len(), 10, "past the window too");
    }
}
