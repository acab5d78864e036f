//! `psctl history` decoding throughput: Helm release payloads written by the real Helm engine
//! (base64 → gzip → JSON → revision) decoded repeatedly. `psctl history` itself makes exactly
//! one API request (a labelled list of Secrets) whatever the number of revisions. The figure is
//! printed on the last line as `history_decode_revisions_per_second=<value> revisions/s`. Run by
//! `cargo test --bench history_decode` (no `--bench` argument: the quick mode CI uses), 200
//! decodes instead of 2,000.

use std::time::Instant;

use psctl::helm::storage::decode_release;

const PAYLOADS: [&[u8]; 2] = [
    include_bytes!("../src/helm/fixtures/fixture-release.v1.release"),
    include_bytes!("../src/helm/fixtures/fixture-release.v2.release"),
];

fn main() {
    let rounds = if std::env::args().any(|arg| arg == "--bench") {
        2_000
    } else {
        200
    };
    let started = Instant::now();
    let mut decoded = 0_u64;
    for round in 0..rounds {
        let payload = PAYLOADS[round % PAYLOADS.len()];
        let revision = decode_release("bench", payload).expect("fixture decodes");
        decoded += u64::from(revision.revision > 0);
    }
    let seconds = started.elapsed().as_secs_f64();
    #[allow(clippy::cast_precision_loss)]
    let rate = decoded as f64 / seconds;
    println!(
        "decoded={decoded} seconds={seconds:.3} payload_bytes={}",
        PAYLOADS[1].len()
    );
    println!("history_decode_revisions_per_second={rate:.0} revisions/s");
}
