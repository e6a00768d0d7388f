//! `kar backup --continuous`: a chain of members read as records come, each closed at its roll
//! and renamed into place; killed (SIGKILL) at arbitrary moments and started again, the chain
//! holds every record exactly once; SIGTERM closes the member being written cleanly.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use kar::archive::Archive;
use serde_json::Value;

use crate::archive::read_records;
use crate::common::{self, consume_all, producer};

fn start(topic: &str, dir: &Path, roll: &str) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kar"))
        .args(["backup", "--json", "--continuous", "--bootstrap"])
        .arg(common::bootstrap())
        .args(["--topics", topic, "--roll-every", roll, "--out-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The folder's members, oldest first, and any unfinished member files.
fn members(dir: &Path) -> (Vec<std::path::PathBuf>, Vec<std::path::PathBuf>) {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files.retain(|p| !p.ends_with(".kar-continuous.lock"));
    files
        .into_iter()
        .partition(|p| p.extension().is_some_and(|x| x == "kar"))
}

/// A steady producer: a record every millisecond or so, keys counting up, until `stop`.
fn steady(
    topic: String,
    partitions: i64,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicI64>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let p = producer(&[]);
        let mut i = 0i64;
        while !stop.load(Ordering::SeqCst) {
            let r = crate::restore::rec(
                1_700_000_000_000 + i,
                Some(format!("k{i}").into_bytes()),
                Some(format!("value {i}").into_bytes()),
                &[],
            );
            common::send_queued(&p, &topic, (i % partitions) as i32, &r);
            i += 1;
            if i % 50 == 0 {
                rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
                sent.store(i, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(40));
            }
        }
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
        sent.store(i, Ordering::SeqCst);
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn killed_at_any_moment_and_started_again_the_chain_holds_every_record_once() {
    let topic = common::unique("continuous");
    common::create_topic(&topic, 2, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicI64::new(0)),
    );
    let producing = steady(topic.clone(), 2, stop.clone(), sent.clone());

    // Killed outright at moments spread over a member's life (planning, reading, closing).
    let mut unfinished_seen = 0;
    for wait_ms in [700u64, 2_300, 1_600, 3_100] {
        let mut child = start(&topic, dir.path(), "1s");
        std::thread::sleep(Duration::from_millis(wait_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        let (_, unfinished) = members(dir.path());
        unfinished_seen += unfinished.len();
        // The member being written is not part of the chain: the chain so far checks whole.
        if !unfinished.is_empty() && !members(dir.path()).0.is_empty() {
            let (code, _, text) = common::kar_cli(&["chain", dir.path().to_str().unwrap()], &[]);
            assert_eq!(code, Some(0), "{text}");
        }
        for m in members(dir.path()).0 {
            let (code, _, text) = common::kar_cli(&["verify", m.to_str().unwrap()], &[]);
            assert_eq!(code, Some(0), "every named member is whole: {text}");
        }
    }
    assert!(
        unfinished_seen > 0,
        "no kill landed inside a member: the test proves less than it says"
    );

    // Then SIGTERM: the member being written is closed cleanly, renamed into place.
    let left: Vec<String> = members(dir.path())
        .1
        .iter()
        .map(|p| p.display().to_string())
        .collect();
    let child = start(&topic, dir.path(), "1h");
    std::thread::sleep(Duration::from_millis(3_000));
    stop.store(true, Ordering::SeqCst);
    producing.join().unwrap();
    std::thread::sleep(Duration::from_millis(1_000));
    // A second run on the same folder is refused: it would remove the first's member.
    let second = start(&topic, dir.path(), "1s").wait_with_output().unwrap();
    assert_eq!(second.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("another continuous backup"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let pid = child.id();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let discarded: Vec<String> = report["discarded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        discarded, left,
        "the last kill's unfinished member (if it had begun one) was removed: {report}"
    );
    assert_eq!(report["members"].as_array().unwrap().len(), 1, "{report}");
    let (names, unfinished) = members(dir.path());
    assert!(unfinished.is_empty(), "{unfinished:?}");
    let d = dir.path().to_str().unwrap();
    let (code, _, text) = common::kar_cli(&["chain", d], &[]);
    assert_eq!(code, Some(0), "{text}");

    // Every record the topic holds, once, in order, across the members: the last member ends
    // at the log's end (the producer stopped before SIGTERM).
    let total = sent.load(Ordering::SeqCst);
    let source = consume_all(&topic, 2);
    assert_eq!(source.values().map(Vec::len).sum::<usize>() as i64, total);
    for p in 0..2 {
        let mut chained = Vec::new();
        for m in &names {
            chained.extend(read_records(&Archive::open(m).unwrap(), &topic, p));
        }
        let offsets: Vec<i64> = chained.iter().map(|r| r.offset).collect();
        let want: Vec<i64> = (0..source[&p].len() as i64).collect();
        assert_eq!(offsets, want, "partition {p}: every offset once");
        assert_eq!(
            chained, source[&p],
            "partition {p}: every record as produced"
        );
    }
}

/// `--retain 2`: a new base every 2 members, and only what the newest 2 restore points need is
/// kept.
#[tokio::test(flavor = "multi_thread")]
async fn retain_keeps_the_newest_points_and_what_their_chains_need() {
    let topic = common::unique("retain");
    common::create_topic(&topic, 1, &[]).await;
    common::fill(&topic, 1, 100, 20).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, r, text) = common::kar_cli(
        &[
            "backup",
            "--json",
            "--continuous",
            "--bootstrap",
            &common::bootstrap(),
            "--topics",
            &topic,
            "--roll-every",
            "1s",
            "--retain",
            "2",
            "--members",
            "5",
            "--out-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{text}");
    let made: Vec<String> = r["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["out"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(made.len(), 5);
    let (names, _) = members(dir.path());
    let names: Vec<String> = names.iter().map(|p| p.display().to_string()).collect();
    assert_eq!(names, made[2..], "m0, m1 removed; m2 kept for m3: {r}");
    let depth = |p: &str| {
        Archive::open(p)
            .unwrap()
            .manifest()
            .parent
            .as_ref()
            .map_or(0, |p| p.depth)
    };
    assert_eq!(
        names.iter().map(|p| depth(p)).collect::<Vec<_>>(),
        [0, 1, 0]
    );
    assert_eq!(r["pruned"].as_array().unwrap().len(), 2, "{r}");
}

/// `--roll-every 64K`: a member is closed once its archive holds 64 KiB, so a backlog is taken
/// in members of about that size, each continuing where the one before ended.
#[tokio::test(flavor = "multi_thread")]
async fn a_size_roll_closes_members_as_they_fill() {
    let topic = common::unique("sizeroll");
    common::create_topic(&topic, 1, &[]).await;
    common::fill(&topic, 1, 3_000, 1_000).await;
    let dir = tempfile::tempdir().unwrap();
    let (code, r, text) = common::kar_cli(
        &[
            "backup",
            "--json",
            "--continuous",
            "--bootstrap",
            &common::bootstrap(),
            "--topics",
            &topic,
            "--compression",
            "none",
            "--chunk-size",
            "16384",
            "--roll-every",
            "64K",
            "--members",
            "3",
            "--out-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(code, Some(0), "{text}");
    let (names, _) = members(dir.path());
    assert_eq!(names.len(), 3, "{r}");
    let mut next = 0;
    for (m, report) in names.iter().zip(r["members"].as_array().unwrap()) {
        let bytes = std::fs::metadata(m).unwrap().len();
        assert!(
            (64 << 10..1 << 20).contains(&bytes),
            "{}: {bytes} bytes",
            m.display()
        );
        assert_eq!(report["archive_bytes"], bytes);
        let got = read_records(&Archive::open(m).unwrap(), &topic, 0);
        assert!(!got.is_empty());
        assert_eq!(
            got[0].offset,
            next,
            "{} continues the one before",
            m.display()
        );
        next = got.last().unwrap().offset + 1;
    }
    assert!(
        next < 3_000,
        "three members of about 64 KiB do not hold the backlog: {next}"
    );
}

/// More single-partition topics than reading threads: every topic is followed (a thread's
/// groups of partitions cannot take turns when each reads until the roll); and the member,
/// restored from a stream, gives every record it holds, also those after the log end it found at
/// its start (the stream's restore closes no partition at that end).
#[tokio::test(flavor = "multi_thread")]
async fn every_topic_is_followed_and_a_member_restores_whole_from_a_stream() {
    let p = common::unique("follow");
    let (x, y) = (format!("{p}-x"), format!("{p}-y"));
    for t in [&x, &y] {
        common::create_topic(t, 1, &[]).await;
        common::fill(t, 1, 50, 20).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_kar"))
        .args(["backup", "--json", "--continuous", "--concurrency", "1"])
        .arg("--bootstrap")
        .arg(common::bootstrap())
        .args(["--topics", &format!("{p}-.*"), "--roll-every", "4s"])
        .args(["--members", "1", "--out-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    for t in [&x, &y] {
        common::fill(t, 1, 30, 20).await;
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (names, _) = members(dir.path());
    let base = Archive::open(&names[0]).unwrap();
    for t in [&x, &y] {
        assert_eq!(
            read_records(&base, t, 0),
            consume_all(t, 1)[&0],
            "{t}: the 50 records before the start and the 30 after"
        );
    }
    let to = common::unique("follow-to");
    let (ok, _, text) = common::kar_piped(
        &names[0],
        &format!(
            "restore - --bootstrap {} --map {x}={to} --topics {x} --state {} --json",
            common::bootstrap(),
            dir.path().join("state").display()
        ),
    );
    assert!(ok, "{text}");
    let strip = |v: &[crate::archive::Rec]| -> Vec<_> {
        v.iter()
            .map(|r| (r.key.clone(), r.value.clone(), r.timestamp))
            .collect()
    };
    assert_eq!(
        strip(&consume_all(&to, 1)[&0]),
        strip(&consume_all(&x, 1)[&0])
    );
}

/// Each member snapshots the registry at its start, so a version registered while one member
/// is written is in the next; the metrics count the members closed and when the last was.
#[tokio::test(flavor = "multi_thread")]
async fn each_member_snapshots_the_registry_and_members_are_counted() {
    let p = common::unique("contreg");
    let (topic, subject) = (format!("{p}-t"), format!("{p}-t-value"));
    common::create_topic(&topic, 1, &[]).await;
    common::fill(&topic, 1, 10, 20).await;
    let source = common::Registry::source();
    let schema = |f: &str| serde_json::json!({"schema": serde_json::json!({"type": "record", "name": "R", "fields": [{"name": f, "type": "string", "default": ""}]}).to_string()});
    source.register(&subject, schema("a")).await;
    let dir = tempfile::tempdir().unwrap();
    let textfile = dir.path().join("kar.prom");
    let child = Command::new(env!("CARGO_BIN_EXE_kar"))
        .arg("--metrics-textfile")
        .arg(&textfile)
        .args(["backup", "--json", "--continuous", "--bootstrap"])
        .arg(common::bootstrap())
        .args([
            "--registry",
            &common::source_registry(),
            "--subjects",
            &format!("{p}-.*"),
        ])
        .args(["--topics", &topic, "--roll-every", "3s", "--members", "2"])
        .arg("--out-dir")
        .arg(dir.path().join("chain"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The first member's registry snapshot is taken before its file is made.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(dir.path().join("chain"))
        .map(|d| d.count())
        .unwrap_or(0)
        < 2
    {
        assert!(std::time::Instant::now() < deadline, "no member begun");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    source.register(&subject, schema("b")).await;
    let out = child.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (names, _) = members(&dir.path().join("chain"));
    let versions: Vec<usize> = names
        .iter()
        .map(|m| {
            let a = Archive::open(m).unwrap();
            let snap = kar::registry::snapshot::read_from_archive(&a)
                .unwrap()
                .unwrap();
            snap.subjects
                .iter()
                .find(|s| s.subject == subject)
                .map_or(0, |s| s.versions.len())
        })
        .collect();
    assert_eq!(
        versions,
        [1, 2],
        "the second member's snapshot holds the new version"
    );
    let text = std::fs::read_to_string(&textfile).unwrap();
    let sample = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or_else(|| panic!("{name} not in {text}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(sample("kar_members_closed_total{"), 2.0);
    let last = sample("kar_last_member_timestamp_seconds{");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((now - 30.0..=now).contains(&last), "{last} vs {now}");
}

/// Waits (at most a minute) until a member is in place in `dir`.
fn wait_for_a_member(dir: &Path) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while members(dir).0.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no member in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn group_process(topic: &str, group: &str, dir: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_kar"))
        .args(["backup", "--json", "--continuous", "--bootstrap"])
        .arg(common::bootstrap())
        .args(["--topics", topic, "--roll-every", "1s", "--group", group])
        .args(["--session-timeout", "6", "--out-dir"])
        .arg(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Three processes of one group share a topic's six partitions, each writing its own chain;
/// one is killed (its partitions go to the others once the group stops hearing from it) and a
/// fourth joins (partitions move to it): the four chains, checked as a set, cover every offset
/// of every partition exactly once, and restored as a set give the topic back record for
/// record.
#[tokio::test(flavor = "multi_thread")]
async fn a_group_covers_every_record_once_across_a_kill_and_a_join() {
    let topic = common::unique("group");
    let group = format!("{topic}-g");
    common::create_topic(&topic, 6, &[]).await;
    let dirs: Vec<tempfile::TempDir> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
    let (stop, sent) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicI64::new(0)),
    );
    let producing = steady(topic.clone(), 6, stop.clone(), sent.clone());
    let mut procs: Vec<Child> = (0..3)
        .map(|i| group_process(&topic, &group, dirs[i].path()))
        .collect();
    // Killed once it has a member in place, so that its chain is part of the set.
    wait_for_a_member(dirs[1].path());
    std::thread::sleep(Duration::from_millis(700));
    procs[1].kill().unwrap();
    procs[1].wait().unwrap();
    std::thread::sleep(Duration::from_secs(8));
    procs.push(group_process(&topic, &group, dirs[3].path()));
    wait_for_a_member(dirs[3].path());
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::SeqCst);
    producing.join().unwrap();
    std::thread::sleep(Duration::from_secs(3));
    for i in [0, 2, 3] {
        let pid = procs[i].id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
    }
    for (i, p) in procs.into_iter().enumerate().filter(|(i, _)| *i != 1) {
        let out = p.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "process {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let paths: Vec<String> = dirs
        .iter()
        .map(|d| d.path().to_str().unwrap().to_string())
        .collect();
    let mut args = vec!["chain", "--set", "--json"];
    args.extend(paths.iter().map(String::as_str));
    let (code, r, text) = common::kar_cli(&args, &[]);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        r["gaps"].as_array().unwrap().is_empty() && r["overlaps"].as_array().unwrap().is_empty()
    );

    // Every record once, from the four chains together; the killed process and the added one
    // each hold some.
    let source = consume_all(&topic, 6);
    assert_eq!(
        source.values().map(Vec::len).sum::<usize>() as i64,
        sent.load(Ordering::SeqCst)
    );
    let mut by_chain = [0usize; 4];
    for p in 0..6 {
        let mut all = Vec::new();
        for (i, d) in dirs.iter().enumerate() {
            for m in members(d.path()).0 {
                let got = read_records(&Archive::open(&m).unwrap(), &topic, p);
                by_chain[i] += got.len();
                all.extend(got);
            }
        }
        all.sort_by_key(|r| r.offset);
        assert_eq!(all, source[&p], "partition {p}: every record once");
    }
    assert!(
        by_chain.iter().all(|n| *n > 0),
        "records by chain: {by_chain:?}"
    );

    // Restored as a set: the topic back, record for record.
    let to = format!("{topic}-restored");
    let map = format!("{topic}={to}");
    let state = dirs[0].path().join("restore-state");
    let mut args = vec!["restore", "--set", "--json", "--bootstrap"];
    let bootstrap = common::bootstrap();
    args.extend([
        bootstrap.as_str(),
        "--map",
        &map,
        "--state",
        state.to_str().unwrap(),
    ]);
    args.extend(paths.iter().map(String::as_str));
    let (code, _, text) = common::kar_cli(&args, &[]);
    assert_eq!(code, Some(0), "{text}");
    let restored = consume_all(&to, 6);
    let strip = |v: &[crate::archive::Rec]| -> Vec<_> {
        v.iter()
            .map(|r| (r.key.clone(), r.value.clone(), r.timestamp))
            .collect()
    };
    for p in 0..6 {
        assert_eq!(
            strip(&restored[&p]),
            strip(&source[&p]),
            "restored partition {p}"
        );
    }
}

/// A set whose chains leave offsets uncovered, or cover some twice, is named as such: the gap
/// and the overlap with their offsets, exit 1; a restore of it is refused before anything is
/// written.
#[tokio::test(flavor = "multi_thread")]
async fn a_set_names_its_gaps_and_overlaps_and_does_not_restore_them() {
    let topic = common::unique("setcheck");
    common::create_topic(&topic, 1, &[]).await;
    let p = producer(&[]);
    let send = |from: i64, to: i64| {
        for i in from..to {
            let r = crate::restore::rec(1_700_000_000_000 + i, None, Some(vec![b'v'; 10]), &[]);
            common::send_queued(&p, &topic, 0, &r);
        }
        rdkafka::producer::Producer::flush(&p, Duration::from_secs(30)).unwrap();
    };
    let backup = |dir: &Path, from_time: Option<i64>| {
        let out = dir.join("a.kar");
        let mut args = vec![
            "backup".to_string(),
            "--bootstrap".into(),
            common::bootstrap(),
            "--topics".into(),
            topic.clone(),
            "--out".into(),
            out.display().to_string(),
        ];
        if let Some(t) = from_time {
            args.extend(["--from-time".into(), t.to_string()]);
        }
        let (code, _, text) =
            common::kar_cli(&args.iter().map(String::as_str).collect::<Vec<_>>(), &[]);
        assert_eq!(code, Some(0), "{text}");
    };
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    send(0, 40);
    backup(dirs[0].path(), None); // 0..40
    send(40, 100);
    backup(dirs[1].path(), Some(1_700_000_000_060)); // 60..100: 40..60 in none
    send(100, 110);
    backup(dirs[2].path(), Some(1_700_000_000_090)); // 90..110: 90..100 held twice
    let d: Vec<&str> = dirs.iter().map(|d| d.path().to_str().unwrap()).collect();
    let (code, r, text) = common::kar_cli(&["chain", "--set", "--json", d[0], d[1], d[2]], &[]);
    assert_eq!(code, Some(1), "{text}");
    assert_eq!(r["gaps"].as_array().unwrap().len(), 1, "{r}");
    assert!(
        r["gaps"][0]
            .as_str()
            .unwrap()
            .starts_with(&format!("{topic}/0: offsets 40..60 ")),
        "{r}"
    );
    assert_eq!(
        r["overlaps"][0]
            .as_str()
            .unwrap()
            .split(" (")
            .next()
            .unwrap(),
        format!("{topic}/0: offsets 90..100 are held twice")
    );
    let to = format!("{topic}-restored");
    let map = format!("{topic}={to}");
    let state = dirs[0].path().join("state");
    let bootstrap = common::bootstrap();
    let restore_set = |dirs: &[&str]| {
        let mut args = vec!["restore", "--set"];
        args.extend_from_slice(dirs);
        let state = state.to_str().unwrap();
        args.extend_from_slice(&["--bootstrap", &bootstrap, "--map", &map, "--state", state]);
        let (code, _, text) = common::kar_cli(&args, &[]);
        (code, text)
    };
    let (code, text) = restore_set(&[d[0], d[1], d[2]]);
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains("the set does not restore") && text.contains("40..60"),
        "{text}"
    );
    assert!(
        common::Watermarks::new()
            .ends(&to, 1)
            .iter()
            .all(|e| *e == 0),
        "nothing written"
    );

    // Without the gap (from 60 on), the overlap restores once: the second chain's chunk, which
    // begins inside the first's range, gives only its records after it.
    let (code, text) = restore_set(&[d[1], d[2]]);
    assert_eq!(code, Some(0), "{text}");
    let got: Vec<i64> = consume_all(&to, 1)[&0]
        .iter()
        .map(|r| r.timestamp)
        .collect();
    let want: Vec<i64> = (60..110).map(|i| 1_700_000_000_000 + i).collect();
    assert_eq!(got, want, "each record once");
}
