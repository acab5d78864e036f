//! A seeded lifecycle simulation: hours of Binance time scripted through the stub over HTTP
//! against real Postgres. Invoices are created and expire; deposits arrive in time, late, before
//! their invoice, twice, for nothing, as poison, in a burst that spans pages, some appearing in
//! the history minutes after their `insertTime`, and move through Binance's status paths
//! (0→1, 0→6→1, 8→1, long pending, 0→7, 2, pending forever) at random delays. The poller is
//! restarted, and killed mid-cycle, at random points. Afterwards every deposit's outcome is
//! compared with an oracle computed from the script alone, and the money adds up.
//!
//! The oracle holds the poller to everything inside the history it is configured to read: on an
//! empty checkpoint the first poll looks back `POLL_INITIAL_LOOKBACK_SECS` from Binance's "now",
//! and nothing older is ever asked for (in production as here). Every scripted deposit lies
//! inside that reach, which the run checks before its first cycle, except one deposit placed
//! before it on purpose, which must never be stored. A deposit the oracle expected but that has
//! no outcome fails with the history windows the poller asked for around its `insertTime`.
//!
//! The seed is printed; `LIFECYCLE_SEED=N` replays a run. `LIFECYCLE_KILL_PERCENT=P` (default
//! 4, at most 94) kills the poller mid-cycle in P of every 100 cycles instead, to hunt for
//! cancellation bugs; a replay needs the same value.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use problemsolver_core::http::Shutdown;
use problemsolver_core::money::Decimal;
use problemsolver_core::testing::TestDb;
use problemsolver_poller::config::Settings;
use problemsolver_poller::service::{CycleOutcome, Poller};
use problemsolver_poller::store::{self, ReconcileMark};
use problemsolver_stubs::binance::{SeenRequest, StubDeposit};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

mod support;
use support::*;

const HOUR_MS: i64 = 60 * MINUTE_MS;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Expect {
    /// One of the in-time successes of an invoice: exactly one of its group is credited, the
    /// others are duplicates.
    InTime(usize),
    Late,
    BeforeInvoice,
    Unmatched,
    Rejected,
    /// Never final: unprocessed at the end.
    Unresolved,
    /// Cannot be stored: in the quarantine, not in deposit_raw.
    Poison,
    /// Inserted before the first poll's reach (`initial_lookback` before Binance's "now" at the
    /// first cycle): never asked for, so never stored.
    BeforeHistory,
}

struct Scripted {
    deposit: StubDeposit,
    /// Binance time at which the row first shows in the history (≥ insertTime).
    appears_ms: i64,
    /// (Binance time, new status) in order.
    transitions: Vec<(i64, i32)>,
    expect: Expect,
}

struct ScriptedInvoice {
    base: String,
    created_ms: i64,
    expires_ms: i64,
}

fn padded(amount: Decimal) -> String {
    format!("{amount:.8}")
}

/// The first poll's look-back. The script's history starts up to an hour before `start` (a
/// deposit made before an invoice of the first hour) and the first cycle runs up to 14 minutes
/// after it, so two hours reach every scripted deposit; the run asserts it.
const INITIAL_LOOKBACK_MS: i64 = 2 * HOUR_MS;

fn settings() -> Settings {
    Settings {
        poll_interval: Duration::from_millis(10),
        overlap: Duration::from_secs(30 * 60),
        initial_lookback: Duration::from_millis(INITIAL_LOOKBACK_MS as u64),
        recv_window_ms: 5000,
        match_batch_size: 500,
        collision_settle: Duration::ZERO,
        stuck_after: Duration::from_secs(3 * 3600),
        recheck_max_requests: 10,
        ..Settings::default()
    }
}

/// Runs cycles until one leads (a restarted poller may see the old session's lock for a moment).
/// A cycle that takes over a minute, or two minutes or 200 cycles without leading, fail the run
/// with what was seen: the last outcome, the pool's state and what every session of the test
/// database is doing (and waiting for). A run that hung under a loaded CI machine once ran into
/// the harness's 600 s timeout without a word: 200 cycles, each waiting out the pool's
/// `acquire_timeout`, add up to more than that.
async fn lead_once(poller: &mut Poller, shutdown: &Shutdown, db: &TestDb) {
    let started = std::time::Instant::now();
    let mut last = String::from("standby");
    for attempt in 0..200 {
        let cycle = tokio::time::timeout(Duration::from_secs(60), poller.cycle(shutdown)).await;
        let stalled = match cycle {
            Ok(Ok(CycleOutcome::Led(_))) => return,
            Ok(Ok(CycleOutcome::Standby)) => {
                last = "standby".to_owned();
                None
            }
            Ok(Err(error)) => {
                last = format!("error: {error}");
                None
            }
            Err(_) => Some("a poller cycle did not finish within 60 s"),
        };
        let stalled = stalled.or_else(|| {
            (started.elapsed() > Duration::from_secs(120))
                .then_some("the poller did not lead within 120 s")
        });
        if let Some(what) = stalled {
            panic!(
                "{what} (attempt {attempt}, last outcome {last}; pool: {} connections, {} idle)\n{}",
                db.pool.size(),
                db.pool.num_idle(),
                sessions(db).await
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the poller never led in 200 cycles (last outcome {last}; pool: {} connections, {} idle)\n{}",
        db.pool.size(),
        db.pool.num_idle(),
        sessions(db).await
    );
}

/// `(pid, application, state, transaction age, wait event, blocking pids, last statement)`.
type SessionRow = (i32, String, String, String, String, Vec<i32>, String);

/// What every other session of the test database is doing, read over a connection of its own
/// (the pool may be the thing that is stuck): state, transaction age, what it waits for and on
/// whom, and its last statement.
async fn sessions(db: &TestDb) -> String {
    use sqlx::Connection;
    let read = async {
        let mut connection = sqlx::PgConnection::connect(db.url().expose()).await?;
        let rows: Vec<SessionRow> = sqlx::query_as(
            "SELECT pid, coalesce(application_name, ''), coalesce(state, ''),
                    coalesce(round(extract(epoch FROM now() - xact_start)::numeric, 1)::text || ' s', '-'),
                    coalesce(wait_event_type || '/' || wait_event, '-'),
                    pg_blocking_pids(pid), left(regexp_replace(coalesce(query, ''), '\\s+', ' ', 'g'), 100)
               FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
              ORDER BY pid",
        )
        .fetch_all(&mut connection)
        .await?;
        let _ = connection.close().await;
        Ok::<_, sqlx::Error>(rows)
    };
    match tokio::time::timeout(Duration::from_secs(10), read).await {
        Ok(Ok(rows)) => rows
            .into_iter()
            .map(|(pid, application, state, transaction, wait, blocked_by, query)| {
                format!(
                    "session {pid} ({application}): {state}, transaction open {transaction}, waiting {wait}, blocked by {blocked_by:?}: {query}"
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Ok(Err(error)) => format!("(the database's sessions could not be read: {error})"),
        Err(_) => "(the database's sessions could not be read within 10 s)".to_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeded_deposit_lifecycles_are_credited_exactly_once() {
    let seed: u64 = std::env::var("LIFECYCLE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    let kill_percent: u32 = std::env::var("LIFECYCLE_KILL_PERCENT")
        .ok()
        .and_then(|p| p.parse().ok())
        .unwrap_or(4)
        .min(94);
    println!(
        "lifecycle_simulation seed={seed} kill_percent={kill_percent} (replay: LIFECYCLE_SEED={seed} LIFECYCLE_KILL_PERCENT={kill_percent})"
    );
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = harness("simulation", settings()).await;
    let pool = h.db.pool.clone();
    let merchant_id = merchant(&pool).await;
    let start = now_ms();
    let horizon = 6 * HOUR_MS;

    // Invoices: bases repeat, so allocation steps come into play.
    let mut invoices = Vec::new();
    let mut by_amount: HashMap<Decimal, usize> = HashMap::new();
    for index in 0..120 {
        let created_ms = start + rng.random_range(0..horizon - HOUR_MS);
        let scripted = ScriptedInvoice {
            base: format!("{}", 10 + index % 40),
            created_ms,
            expires_ms: created_ms + HOUR_MS,
        };
        let made = invoice_between(
            &pool,
            merchant_id,
            &scripted.base,
            scripted.created_ms,
            scripted.expires_ms,
        )
        .await;
        assert!(
            by_amount.insert(made.publish_amount, index).is_none(),
            "amounts are unique while held"
        );
        invoices.push((scripted, made.publish_amount));
    }

    let mut script: Vec<Scripted> = Vec::new();
    let mut next_id = 0u64;
    let mut id = || {
        next_id += 1;
        format!("sim-{next_id}")
    };
    let success_path = |rng: &mut StdRng, t: i64| -> (i32, Vec<(i64, i32)>) {
        match rng.random_range(0..5) {
            0 => (1, vec![]),
            1 => (0, vec![(t + rng.random_range(1..20) * MINUTE_MS, 1)]),
            2 => {
                let six = t + rng.random_range(1..30) * MINUTE_MS;
                (
                    0,
                    vec![(six, 6), (six + rng.random_range(1..90) * MINUTE_MS, 1)],
                )
            }
            3 => (8, vec![(t + rng.random_range(1..45) * MINUTE_MS, 1)]),
            // Pending for hours, far past the overlap.
            _ => (0, vec![(t + rng.random_range(40..240) * MINUTE_MS, 1)]),
        }
    };
    for (index, (invoice, amount)) in invoices.iter().enumerate() {
        let amount = *amount;
        let roll = rng.random_range(0..100);
        let mut add = |rng: &mut StdRng, t: i64, expect: Expect, failing: bool| {
            let (status, transitions) = if failing {
                match rng.random_range(0..3) {
                    0 => (2, vec![]),
                    1 => (0, vec![(t + rng.random_range(1..60) * MINUTE_MS, 7)]),
                    _ => (8, vec![(t + rng.random_range(1..60) * MINUTE_MS, 2)]),
                }
            } else {
                success_path(rng, t)
            };
            // Some rows show in the history minutes after their insertTime (within the overlap).
            let appears_ms = if rng.random_ratio(1, 5) {
                t + rng.random_range(1..20) * MINUTE_MS
            } else {
                t
            };
            script.push(Scripted {
                deposit: deposit_at(&id(), &padded(amount), t, status),
                appears_ms,
                transitions,
                expect,
            });
        };
        let in_time = |rng: &mut StdRng| rng.random_range(invoice.created_ms..=invoice.expires_ms);
        match roll {
            0..45 => {
                let t = in_time(&mut rng);
                add(&mut rng, t, Expect::InTime(index), false)
            }
            45..55 => {
                // Paid twice.
                for _ in 0..2 {
                    let t = in_time(&mut rng);
                    add(&mut rng, t, Expect::InTime(index), false);
                }
            }
            55..65 => {
                let t = invoice.expires_ms + rng.random_range(1..120) * MINUTE_MS;
                add(&mut rng, t, Expect::Late, false);
            }
            65..72 => {
                let t = invoice.created_ms - rng.random_range(1..60) * MINUTE_MS;
                add(&mut rng, t, Expect::BeforeInvoice, false);
            }
            72..80 => {
                let t = in_time(&mut rng);
                add(&mut rng, t, Expect::Rejected, true)
            }
            _ => {} // abandoned: expires unpaid
        }
    }
    for _ in 0..25 {
        let t = start + rng.random_range(0..horizon);
        let amount: Decimal = format!("{}.12345678", rng.random_range(500..900))
            .parse()
            .unwrap();
        let (status, transitions) = success_path(&mut rng, t);
        script.push(Scripted {
            deposit: deposit_at(&id(), &padded(amount), t, status),
            appears_ms: t,
            transitions,
            expect: Expect::Unmatched,
        });
    }
    for _ in 0..4 {
        let t = start + rng.random_range(0..HOUR_MS);
        script.push(Scripted {
            deposit: deposit_at(&id(), "3.33000000", t, 0),
            appears_ms: t,
            transitions: vec![],
            expect: Expect::Unresolved,
        });
    }
    for n in 0..3 {
        let t = start + rng.random_range(0..horizon);
        let mut poison = deposit_at(&id(), if n == 0 { "0.00000000" } else { "1.5" }, t, 1);
        if n > 0 {
            poison.tx_id = format!("0x{n}\u{0}");
        }
        script.push(Scripted {
            deposit: poison,
            appears_ms: t,
            transitions: vec![],
            expect: Expect::Poison,
        });
    }
    // A burst inside one minute, larger than a page: the window is read in two pages.
    let burst_at = start + rng.random_range(HOUR_MS..horizon - HOUR_MS);
    for n in 0..1_050 {
        script.push(Scripted {
            deposit: deposit_at(
                &id(),
                &format!("0.{:08}", 1_000 + n),
                burst_at + n % 60_000,
                1,
            ),
            appears_ms: burst_at + n % 60_000,
            transitions: vec![],
            expect: Expect::Unmatched,
        });
    }
    // Older than any first poll can reach (the first cycle runs at least a minute after
    // `start`): drawn from no random number, so every other deposit of a seed stays as it was.
    script.push(Scripted {
        deposit: deposit_at(&id(), "777.00000000", start - 3 * HOUR_MS, 1),
        appears_ms: start - 3 * HOUR_MS,
        transitions: vec![],
        expect: Expect::BeforeHistory,
    });
    let last_event = script
        .iter()
        .flat_map(|s| {
            s.transitions
                .iter()
                .map(|(at, _)| *at)
                .chain([s.appears_ms])
        })
        .max()
        .unwrap_or(start);

    // Run: advance Binance's clock, apply what became true, cycle; restart and kill at random.
    let mut appeared = vec![false; script.len()];
    let mut applied = vec![0usize; script.len()];
    let shutdown = Shutdown::new();
    let mut now = start;
    let (mut cycles, mut restarts, mut kills, mut max_requests) = (0u32, 0u32, 0u32, 0usize);
    let mut calm_cycles = 0;
    // (Binance time, what happened, index of its first history request) of every step.
    let mut steps: Vec<(i64, &'static str, usize)> = Vec::new();
    while calm_cycles < 3 {
        now += rng.random_range(1..15) * MINUTE_MS;
        if steps.is_empty() {
            // The oracle's premise: the first poll reaches back to every deposit it expects an
            // outcome for, even if it leads only at the last moment `lead_once` allows (two
            // minutes), and not to the one placed before the history on purpose.
            let reach_ms = now + 2 * MINUTE_MS - INITIAL_LOOKBACK_MS;
            for scripted in &script {
                let inside = scripted.deposit.insert_time >= reach_ms;
                let before = scripted.deposit.insert_time < now - INITIAL_LOOKBACK_MS;
                match scripted.expect {
                    Expect::BeforeHistory => assert!(before, "{}", scripted.deposit.id),
                    _ => assert!(
                        inside,
                        "seed {seed}: the script put {} before the first poll's reach",
                        scripted.deposit.id
                    ),
                }
            }
        }
        h.stub.set_server_time_offset_ms(now - now_ms());
        for (index, scripted) in script.iter().enumerate() {
            if !appeared[index] && scripted.appears_ms <= now {
                h.stub.push_deposit(scripted.deposit.clone());
                appeared[index] = true;
            }
            // A transition before the row shows in the history is applied when it shows.
            while appeared[index]
                && applied[index] < scripted.transitions.len()
                && scripted.transitions[applied[index]].0 <= now
            {
                h.stub.set_deposit_status(
                    &scripted.deposit.id,
                    scripted.transitions[applied[index]].1,
                );
                applied[index] += 1;
            }
        }
        let before = h.stub.requests().len();
        let roll: u32 = rng.random_range(0..100);
        steps.push((
            now,
            match roll {
                0..6 => "restart",
                _ if roll < 6 + kill_percent => "kill",
                _ => "cycle",
            },
            before,
        ));
        match roll {
            0..6 => {
                h.poller.shutdown().await;
                h.poller = poller_for(&h.db, &h.stub.base_url(), settings()).0;
                restarts += 1;
                lead_once(&mut h.poller, &shutdown, &h.db).await;
            }
            _ if roll < 6 + kill_percent => {
                // Killed mid-cycle: the future is dropped wherever it is, then a new process.
                let budget = Duration::from_millis(rng.random_range(1..40));
                let _ = tokio::time::timeout(budget, h.poller.cycle(&shutdown)).await;
                h.poller = poller_for(&h.db, &h.stub.base_url(), settings()).0;
                kills += 1;
                lead_once(&mut h.poller, &shutdown, &h.db).await;
            }
            _ => lead_once(&mut h.poller, &shutdown, &h.db).await,
        }
        cycles += 1;
        max_requests = max_requests.max(h.stub.requests().len() - before);
        if now > last_event + 40 * MINUTE_MS {
            calm_cycles += 1;
        }
    }

    // The oracle, from the script alone.
    let requests = h.stub.requests();
    let explain = |scripted: &Scripted| history_around(scripted, start, &steps, &requests);
    let outcomes: HashMap<String, Option<String>> = sqlx::query_as::<_, (String, Option<String>)>(
        "SELECT binance_deposit_id, outcome FROM deposit_raw",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut groups: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    let mut tally: BTreeMap<String, u64> = BTreeMap::new();
    for scripted in &script {
        let id = scripted.deposit.id.as_str();
        let got = outcomes.get(id).cloned().flatten();
        *tally
            .entry(got.clone().unwrap_or_else(|| "none".to_owned()))
            .or_default() += 1;
        let final_status = scripted
            .transitions
            .last()
            .map(|(_, s)| *s)
            .unwrap_or(scripted.deposit.status);
        let expected = match scripted.expect {
            Expect::InTime(invoice) => {
                groups.entry(invoice).or_default().push(id);
                continue;
            }
            Expect::Late => "late",
            Expect::BeforeInvoice => "before_invoice",
            Expect::Unmatched => "unmatched",
            Expect::Rejected => {
                assert!([2, 7].contains(&final_status));
                "rejected"
            }
            Expect::Unresolved => {
                assert_eq!(
                    got, None,
                    "{id} never became final: it must stay unprocessed"
                );
                continue;
            }
            Expect::BeforeHistory => {
                assert!(
                    !outcomes.contains_key(id),
                    "seed {seed}: {id} lies before the first poll's reach, yet was stored"
                );
                continue;
            }
            Expect::Poison => {
                assert!(!outcomes.contains_key(id), "{id} cannot be stored");
                assert_eq!(
                    events_for(&pool, "deposit.quarantined", id).await,
                    1,
                    "{id}"
                );
                continue;
            }
        };
        assert_eq!(
            got.as_deref(),
            Some(expected),
            "seed {seed}: deposit {id}\n{}",
            explain(scripted)
        );
    }
    for (invoice, ids) in &groups {
        let credited = ids
            .iter()
            .filter(|id| outcomes.get(**id).cloned().flatten().as_deref() == Some("credited"))
            .count();
        let duplicates = ids
            .iter()
            .filter(|id| outcomes.get(**id).cloned().flatten().as_deref() == Some("duplicate"))
            .count();
        assert_eq!(
            (credited, duplicates),
            (1, ids.len() - 1),
            "seed {seed}: invoice #{invoice} deposits {ids:?}\n{}",
            script
                .iter()
                .filter(|s| ids.contains(&s.deposit.id.as_str()))
                .map(explain)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    // Nothing else was credited, and the money adds up.
    let credited: i64 = count(
        &pool,
        "SELECT count(*) FROM deposit_raw WHERE outcome = 'credited'",
    )
    .await;
    assert_eq!(credited as usize, groups.len(), "seed {seed}");
    let (ledger, deposits, invoices_paid): (Decimal, Decimal, Decimal) = sqlx::query_as(
        "SELECT (SELECT coalesce(sum(change_amount), 0) FROM ledger_entries WHERE entry_type = 'credit'),
                (SELECT coalesce(sum(amount), 0) FROM deposit_raw WHERE outcome = 'credited'),
                (SELECT coalesce(sum(publish_amount), 0) FROM invoices WHERE status = 'paid')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(ledger, deposits, "seed {seed}");
    assert_eq!(ledger, invoices_paid, "seed {seed}");
    assert_eq!(
        count(
            &pool,
            "SELECT count(*) FROM invoices WHERE status = 'pending'"
        )
        .await,
        0,
        "every unpaid invoice expired"
    );
    // Every processed deposit reconciles (credited ones with their records, the others with
    // their system event).
    let mut mark = ReconcileMark::default();
    let (mut checked, mut mismatches) = (0, 0);
    loop {
        let pass = store::reconcile_after(&pool, mark, 500).await.unwrap();
        if pass.checked == 0 {
            break;
        }
        checked += pass.checked;
        mismatches += pass.mismatches;
        mark = pass.through;
    }
    assert_eq!(mismatches, 0, "seed {seed}");
    assert_eq!(
        checked as i64,
        count(
            &pool,
            "SELECT count(*) FROM deposit_raw WHERE processed_at IS NOT NULL"
        )
        .await
    );
    // The ones Binance never finalised were reported stuck, once each.
    for scripted in script.iter().filter(|s| s.expect == Expect::Unresolved) {
        assert_eq!(
            events_for(&pool, "deposit.stuck", &scripted.deposit.id).await,
            1,
            "{}",
            scripted.deposit.id
        );
    }
    // Within Binance's limits: every cycle stayed under a small, fixed number of requests.
    assert!(
        max_requests <= 20,
        "a cycle made {max_requests} history requests"
    );
    println!(
        "lifecycle_simulation seed={seed} deposits={} invoices={} cycles={cycles} restarts={restarts} kills={kills} max_requests_per_cycle={max_requests} outcomes={tally:?}",
        script.len(),
        invoices.len()
    );
    h.poller.shutdown().await;
    h.db.drop_db().await;
}

/// For a failed expectation: the deposit's script and every history window the poller asked for
/// that covered its `insertTime`, with the step it was asked in (times in minutes after the
/// simulation's start), or, when none did, the windows nearest to it.
fn history_around(
    scripted: &Scripted,
    start: i64,
    steps: &[(i64, &'static str, usize)],
    requests: &[SeenRequest],
) -> String {
    let minutes = |ms: i64| format!("{:+.2}", (ms - start) as f64 / MINUTE_MS as f64);
    let at = scripted.deposit.insert_time;
    let mut lines = vec![format!(
        "{}: insertTime {} min, shows in the history at {} min, status {} then {:?}",
        scripted.deposit.id,
        minutes(at),
        minutes(scripted.appears_ms),
        scripted.deposit.status,
        scripted
            .transitions
            .iter()
            .map(|(t, status)| (minutes(*t), *status))
            .collect::<Vec<_>>()
    )];
    let param = |query: &str, name: &str| -> Option<i64> {
        query
            .split('&')
            .find_map(|p| p.strip_prefix(name)?.strip_prefix('='))?
            .parse()
            .ok()
    };
    let mut windows = Vec::new();
    for (index, request) in requests.iter().enumerate() {
        let (Some(from), Some(to)) = (
            param(&request.query, "startTime"),
            param(&request.query, "endTime"),
        ) else {
            continue;
        };
        let step = steps.partition_point(|(_, _, first)| *first <= index);
        let (now, action, _) = steps[step.saturating_sub(1)];
        windows.push((
            (from - at).abs().min((to - at).abs()) * i64::from(!(from..=to).contains(&at)),
            format!(
                "  step {} ({action} at {} min): [{}, {}] min, offset {}, HTTP {}",
                step.saturating_sub(1),
                minutes(now),
                minutes(from),
                minutes(to),
                param(&request.query, "offset").unwrap_or(0),
                request.status
            ),
        ));
    }
    let covering: Vec<&String> = windows
        .iter()
        .filter(|(distance, _)| *distance == 0)
        .map(|(_, line)| line)
        .collect();
    if covering.is_empty() {
        lines.push("no history request covered its insertTime; the nearest:".to_owned());
        windows.sort_by_key(|(distance, _)| *distance);
        lines.extend(windows.into_iter().take(5).map(|(_, line)| line));
    } else {
        lines.push(format!(
            "{} requests covered its insertTime:",
            covering.len()
        ));
        lines.extend(covering.into_iter().cloned());
    }
    lines.join("\n")
}
