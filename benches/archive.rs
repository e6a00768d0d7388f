//! The archive format against raw baselines: what kar's framing, hashing, index and record
//! encoding cost on top of plain zstd level 3 and blake3 over the same bytes.
//!
//! Run with `cargo bench --bench archive`. The data set is ~32 MiB of deterministic 1 KiB JSON-like
//! values with keys `customer-N`, spread over 3 partitions. Every group reports throughput in
//! key + value bytes, so the kar and baseline figures compare directly.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use kar::archive::verify::{VerifyLevel, verify, verify_source};
use kar::archive::{Archive, ArchiveWriter, Source, WriterOptions};
use kar::format::chunk::TimestampType;
use kar::format::manifest::ArchiveStatus;

const TOPIC: &str = "orders";
const PARTITIONS: i32 = 3;
const TOTAL_BYTES: usize = 32 * 1024 * 1024;
const VALUE_LEN: usize = 1024;
const CHUNK_BYTES: usize = 2 * 1024 * 1024;
const ZSTD_LEVEL: i32 = 3;
const NO_HEADERS: [(&str, Option<&[u8]>); 0] = [];

struct Rec {
    partition: i32,
    offset: i64,
    timestamp: i64,
    key: Vec<u8>,
    value: Vec<u8>,
}

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const EVENTS: [&str; 6] = [
    "order_created",
    "order_paid",
    "order_shipped",
    "order_delivered",
    "order_cancelled",
    "order_refunded",
];
const CITIES: [&str; 8] = [
    "Amsterdam",
    "Berlin",
    "Lisbon",
    "Madrid",
    "Oslo",
    "Paris",
    "Vienna",
    "Warsaw",
];

/// One JSON-like value of exactly `VALUE_LEN` bytes: repeated field names and vocabulary, with a
/// few pseudo-random numbers, so zstd compresses it a few times over.
fn value(rng: &mut XorShift, offset: i64, customer: u64, ts: i64) -> Vec<u8> {
    let mut v = format!(
        "{{\"order_id\":{offset},\"customer\":\"customer-{customer}\",\"event\":\"{}\",\
         \"ts\":{ts},\"currency\":\"EUR\",\"shipping\":{{\"city\":\"{}\",\"zip\":\"{:05}\"}},\
         \"items\":[",
        EVENTS[rng.below(EVENTS.len() as u64) as usize],
        CITIES[rng.below(CITIES.len() as u64) as usize],
        rng.below(100_000),
    );
    let mut i = 0;
    while v.len() < VALUE_LEN - 120 {
        if i > 0 {
            v.push(',');
        }
        v.push_str(&format!(
            "{{\"sku\":\"SKU-{:06}\",\"qty\":{},\"unit_price\":{}.{:02}}}",
            rng.below(1_000_000),
            1 + rng.below(9),
            rng.below(500),
            rng.below(100)
        ));
        i += 1;
    }
    v.push_str(&format!(
        "],\"total\":{}.{:02},\"note\":\"",
        rng.below(10_000),
        rng.below(100)
    ));
    while v.len() < VALUE_LEN - 2 {
        v.push('x');
    }
    v.push_str("\"}");
    let mut b = v.into_bytes();
    b.truncate(VALUE_LEN);
    b
}

fn records() -> Vec<Rec> {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut next_offset = [0i64; PARTITIONS as usize];
    let mut out = Vec::new();
    let mut bytes = 0;
    let mut ts = 1_700_000_000_000i64;
    while bytes < TOTAL_BYTES {
        let customer = rng.below(5_000);
        let partition = (customer % PARTITIONS as u64) as i32;
        let offset = next_offset[partition as usize];
        next_offset[partition as usize] += 1;
        ts += rng.below(20) as i64;
        let key = format!("customer-{customer}").into_bytes();
        let value = value(&mut rng, offset, customer, ts);
        bytes += key.len() + value.len();
        out.push(Rec {
            partition,
            offset,
            timestamp: ts,
            key,
            value,
        });
    }
    out
}

fn write_archive(recs: &[Rec], capacity: usize) -> Vec<u8> {
    let opts = WriterOptions {
        chunk_target_bytes: CHUNK_BYTES,
        zstd_level: ZSTD_LEVEL,
        created_at_ms: 1_700_000_000_000,
        ..WriterOptions::default()
    };
    let mut w = ArchiveWriter::new(Vec::with_capacity(capacity), "bench", opts).unwrap();
    for r in recs {
        w.append(
            TOPIC,
            r.partition,
            r.offset,
            r.timestamp,
            TimestampType::CreateTime,
            Some(&r.key),
            Some(&r.value),
            NO_HEADERS,
        )
        .unwrap();
    }
    let (bytes, _summary) = w.finish(ArchiveStatus::Complete, vec![]).unwrap();
    bytes
}

/// The raw chunk contents without kar's encoding: key + value of each record, concatenated per
/// partition in offset order, cut into buffers of about `CHUNK_BYTES`.
fn raw_buffers(recs: &[Rec]) -> Vec<Vec<u8>> {
    let mut open: Vec<Vec<u8>> = vec![Vec::new(); PARTITIONS as usize];
    let mut done = Vec::new();
    for r in recs {
        let b = &mut open[r.partition as usize];
        b.extend_from_slice(&r.key);
        b.extend_from_slice(&r.value);
        if b.len() >= CHUNK_BYTES {
            done.push(std::mem::take(b));
        }
    }
    done.extend(open.into_iter().filter(|b| !b.is_empty()));
    done
}

fn baseline_write(bufs: &[Vec<u8>]) -> Vec<(blake3::Hash, Vec<u8>)> {
    bufs.iter()
        .map(|b| {
            (
                blake3::hash(b),
                zstd::bulk::compress(b, ZSTD_LEVEL).unwrap(),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let recs = records();
    let raw_bytes: u64 = recs
        .iter()
        .map(|r| (r.key.len() + r.value.len()) as u64)
        .sum();
    let archive = write_archive(&recs, 0);
    let bufs = raw_buffers(&recs);
    let compressed = baseline_write(&bufs);
    let zstd_bytes: usize = compressed.iter().map(|(_, z)| z.len()).sum();
    let whole = zstd::bulk::compress(&bufs.concat(), ZSTD_LEVEL).unwrap();
    println!(
        "compression: {} records, {raw_bytes} key+value bytes; kar archive {} bytes = ratio {:.2}; \
         zstd -{ZSTD_LEVEL} in {} buffers of ~2 MiB {zstd_bytes} bytes = ratio {:.2}; \
         zstd -{ZSTD_LEVEL} as one stream {} bytes = ratio {:.2}",
        recs.len(),
        archive.len(),
        raw_bytes as f64 / archive.len() as f64,
        bufs.len(),
        raw_bytes as f64 / zstd_bytes as f64,
        whole.len(),
        raw_bytes as f64 / whole.len() as f64,
    );
    assert!(verify_source(Source::Owned(archive.clone()), "bench", VerifyLevel::Full).ok);

    let configure = |g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>| {
        g.throughput(Throughput::Bytes(raw_bytes));
        g.sample_size(10);
        g.warm_up_time(Duration::from_secs(2));
        g.measurement_time(Duration::from_secs(5));
    };

    let mut g = c.benchmark_group("write");
    configure(&mut g);
    g.bench_function("kar_archive", |b| {
        b.iter(|| black_box(write_archive(&recs, archive.len())))
    });
    g.bench_function("baseline_blake3_zstd", |b| {
        b.iter(|| black_box(baseline_write(&bufs)))
    });
    g.finish();

    let mut g = c.benchmark_group("verify");
    configure(&mut g);
    g.bench_function("kar_full", |b| {
        b.iter_batched(
            || archive.clone(),
            |bytes| {
                let r = verify_source(Source::Owned(bytes), "bench", VerifyLevel::Full);
                assert!(r.ok);
                r
            },
            BatchSize::LargeInput,
        )
    });
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.kar");
    std::fs::write(&path, &archive).unwrap();
    g.bench_function("kar_full_mmap", |b| {
        b.iter(|| {
            let r = verify(&path, VerifyLevel::Full).unwrap();
            assert!(r.ok);
            r
        })
    });
    // The one-pass stream verify (`kar verify -`): the same checks over a reader, no mmap.
    g.bench_function("kar_full_stream", |b| {
        b.iter(|| {
            let r = kar::archive::stream::verify_stream(&archive[..], "bench", None, &|_| {});
            assert!(r.ok);
            r
        })
    });
    g.bench_function("baseline_blake3_zstd_decompress", |b| {
        let mut dec = zstd::bulk::Decompressor::new().unwrap();
        let mut out = Vec::with_capacity(CHUNK_BYTES * 2);
        b.iter(|| {
            for (h, z) in &compressed {
                out.clear();
                dec.decompress_to_buffer(z, &mut out).unwrap();
                assert_eq!(blake3::hash(&out), *h);
            }
        })
    });
    g.finish();

    let mut g = c.benchmark_group("read");
    configure(&mut g);
    g.bench_function("kar_iterate", |b| {
        b.iter_batched(
            || archive.clone(),
            |bytes| {
                let a = Archive::from_source(Source::Owned(bytes), "bench").unwrap();
                let mut sum = 0usize;
                for p in 0..PARTITIONS {
                    a.for_each_record(TOPIC, p, |r| sum += r.value.map_or(0, <[u8]>::len))
                        .unwrap();
                }
                assert_eq!(sum, recs.len() * VALUE_LEN);
                sum
            },
            BatchSize::LargeInput,
        )
    });
    g.finish();

    // What rewriting schema IDs adds to the record loop of a restore, without Kafka: the same
    // decompressed chunks walked record by record, with and without rewriting each value's ID.
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    let mut enc = kar::format::chunk::ChunkEncoder::new(TOPIC, 0).unwrap();
    for (i, r) in recs.iter().enumerate() {
        let mut v = kar::registry::wire::header(7).to_vec();
        v.extend_from_slice(&r.value[5..]);
        enc.push(
            i as i64,
            r.timestamp,
            TimestampType::CreateTime,
            Some(&r.key),
            Some(&v),
            NO_HEADERS,
        )
        .unwrap();
        if enc.encoded_len() >= CHUNK_BYTES {
            let full = std::mem::replace(
                &mut enc,
                kar::format::chunk::ChunkEncoder::new(TOPIC, 0).unwrap(),
            );
            let (first, last) = full.offsets();
            chunks.push(full.finish(first..last + 1).unwrap().1);
        }
    }
    // 7 -> 8 and 8 -> 7, so every pass rewrites every value again.
    let ids = kar::restore::rewrite::IdMap::new([(7, 8), (8, 7)], [7, 8]);
    let walk = |chunks: &mut Vec<Vec<u8>>, rewrite: bool| {
        let mut sum = 0usize;
        let mut stats = kar::restore::rewrite::RewriteStats::default();
        for buf in chunks.iter_mut() {
            let mut pos = kar::format::chunk::RecordPositions::new(buf, 0).unwrap();
            while let Some(at) = pos.next_in(buf) {
                let at = at.unwrap();
                if rewrite {
                    kar::restore::rewrite::rewrite_record(buf, &at, &ids, &mut stats);
                }
                sum += at.record(buf).value.map_or(0, |v| v[4] as usize);
            }
        }
        sum
    };
    let mut g = c.benchmark_group("restore_loop");
    configure(&mut g);
    g.bench_function("walk_records", |b| b.iter(|| walk(&mut chunks, false)));
    g.bench_function("walk_and_rewrite_ids", |b| {
        b.iter(|| walk(&mut chunks, true))
    });
    g.finish();
}

/// Sealing (§15) against the crate's own benchmark: RustCrypto's `benches/src/chacha20poly1305.rs`
/// encrypts a 16 KiB buffer with `ChaCha20Poly1305::encrypt` (its largest size); kar seals with
/// XChaCha20-Poly1305 (another key derivation per message, the same cipher and MAC) at the same
/// size, and at a chunk's size, where most bytes are sealed. Throughput in plaintext bytes.
fn aead(c: &mut Criterion) {
    use chacha20poly1305::aead::{Aead, KeyInit};
    use kar::format::crypt::{FileKey, FrameKeys, aad};
    let keys = FrameKeys::derive(&FileKey([7; 32]));
    let ad = aad(kar::format::ArchiveId([1; 16]), 1, 1, 0, &[2; 32]);
    let mut g = c.benchmark_group("aead");
    g.sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    for size in [16 * 1024, CHUNK_BYTES] {
        let buf = vec![0u8; size];
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(
            format!("crate_bench_chacha20poly1305_encrypt_{size}"),
            |b| {
                let cipher = chacha20poly1305::ChaCha20Poly1305::new(&Default::default());
                b.iter(|| {
                    cipher
                        .encrypt(&Default::default(), black_box(&buf[..]))
                        .unwrap()
                })
            },
        );
        // The same call with the extended-nonce variant kar uses: what sealing costs the crate.
        g.bench_function(format!("crate_xchacha20poly1305_encrypt_{size}"), |b| {
            let cipher = chacha20poly1305::XChaCha20Poly1305::new(&Default::default());
            b.iter(|| {
                cipher
                    .encrypt(&Default::default(), black_box(&buf[..]))
                    .unwrap()
            })
        });
        g.bench_function(format!("kar_seal_{size}"), |b| {
            b.iter(|| keys.seal(&ad, [3; 24], black_box(&buf)))
        });
        let sealed = keys.seal(&ad, [3; 24], &buf);
        let mut out = Vec::new();
        g.bench_function(format!("kar_open_{size}"), |b| {
            b.iter(|| keys.open(&ad, black_box(&sealed), &mut out).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench, aead);
criterion_main!(benches);
