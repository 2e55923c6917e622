//! `phivault bench audit-verify`: how fast a stored chain verifies, in events per second.

use std::time::Instant;

use anyhow::{Result, bail};
use chrono::{TimeZone, Utc};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use phivault_audit::{
    Action, Actor, ActorKind, AuditEvent, ChainedEvent, Checkpoint, CheckpointSigner, GENESIS,
    Outcome, Resource, Source, chain, verify,
};
use phivault_store::TenantId;
use uuid::Uuid;

#[derive(Args)]
pub struct AuditVerifyArgs {
    /// Events in the chain.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// A signed checkpoint every this many events.
    #[arg(long, default_value_t = 10_000)]
    checkpoint_every: u64,
    /// Verification rounds (the median is reported).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

fn synthetic_event(seq: u64, tenant: TenantId) -> AuditEvent {
    AuditEvent {
        sequence: seq,
        time: Utc
            .timestamp_micros(1_800_000_000_000_000 + seq as i64)
            .single()
            .unwrap_or_default(),
        tenant: Some(tenant),
        actor: Actor {
            kind: ActorKind::User,
            id: Uuid::from_u128(u128::from(seq % 97)).to_string(),
            role: "provider".into(),
        },
        source: Source {
            ip: "127.0.0.1".into(),
            user_agent: "phivault-bench (synthetic)".into(),
            device: String::new(),
        },
        action: Action::PhiRead,
        resource: Resource {
            kind: "patient".into(),
            id: Uuid::from_u128(u128::from(seq)).to_string(),
        },
        fields: vec![
            "mrn".into(),
            "given_name".into(),
            "family_name".into(),
            "date_of_birth".into(),
        ],
        outcome: Outcome::Success,
        reason: None,
        request_id: Uuid::from_u128(u128::from(seq) << 64).to_string(),
        before: None,
        after: None,
    }
}

pub fn run(args: AuditVerifyArgs) -> Result<()> {
    if args.events == 0 || args.checkpoint_every == 0 || args.rounds == 0 {
        bail!("--events, --checkpoint-every and --rounds must be at least 1");
    }
    let signer = CheckpointSigner::from_seed(&[0x42; 32]);
    let tenant = TenantId::from_uuid(Uuid::from_u128(1));
    let bar = ProgressBar::new(args.events);
    bar.set_style(
        ProgressStyle::with_template("  building chain [{bar:30}] {pos}/{len}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut events: Vec<ChainedEvent> = Vec::with_capacity(args.events as usize);
    let mut checkpoints = Vec::new();
    let mut prev = GENESIS;
    for seq in 1..=args.events {
        let e = chain(prev, synthetic_event(seq, tenant));
        prev = e.hash;
        if seq.is_multiple_of(args.checkpoint_every) || seq == args.events {
            checkpoints.push(signer.sign(Checkpoint {
                sequence: seq,
                head: e.hash,
                time: e.event.time,
            }));
        }
        events.push(e);
        if seq.is_multiple_of(10_000) {
            bar.set_position(seq);
        }
    }
    bar.finish_and_clear();
    let key = signer.verifying_key();
    let mut rates = Vec::new();
    for round in 1..=args.rounds {
        let start = Instant::now();
        let v = verify(&events, &checkpoints, &key)
            .map_err(|f| anyhow::anyhow!("the synthetic chain failed: {f}"))?;
        let secs = start.elapsed().as_secs_f64();
        rates.push(v.events as f64 / secs);
        eprintln!(
            "  round {round}: {} events, {} checkpoints, {:.3} s",
            v.events,
            checkpoints.len(),
            secs
        );
    }
    rates.sort_by(f64::total_cmp);
    println!(
        "phivault bench audit-verify: {} events, a checkpoint every {}, one thread: {:.0} events/s (median of {})",
        args.events,
        args.checkpoint_every,
        rates[rates.len() / 2],
        args.rounds
    );
    Ok(())
}
