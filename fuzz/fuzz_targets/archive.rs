//! Arbitrary bytes as an archive file: open, verify at every level, iterate every record, inspect
//! and dump. Nothing may panic, hang or allocate without bound.
#![no_main]

use kar::archive::verify::{VerifyLevel, verify_source};
use kar::archive::{Archive, Source};
use libfuzzer_sys::fuzz_target;

/// kar catches redb's panics on a malformed index and reports them as errors; libfuzzer-sys's
/// hook would abort on them even so. Panics that escape kar still abort and count as crashes.
fn quiet_caught_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| std::panic::set_hook(Box::new(|_| {})));
}

fuzz_target!(|data: &[u8]| {
    quiet_caught_panics();
    for level in [VerifyLevel::Quick, VerifyLevel::Fast, VerifyLevel::Full] {
        let _ = verify_source(Source::Owned(data.to_vec()), "fuzz", level);
    }
    if let Ok(a) = Archive::from_source(Source::Owned(data.to_vec()), "fuzz") {
        let _ = kar::archive::inspect::inspect_archive(&a);
        if let Ok(ix) = a.index_content() {
            for c in ix.chunks.iter().take(16) {
                let _ = a.for_each_record(&c.topic, c.partition, |_| {});
            }
            for id in ix.schemas.keys().take(4) {
                let _ = a.schema_blob(*id);
            }
        }
    }
    let _ = kar::archive::dump::dump(data);
});
