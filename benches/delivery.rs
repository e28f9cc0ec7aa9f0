//! Delivery: reports per second from the outbox to a local mosquitto with 150 KB snapshots
//! (sent inline, as base64) at QoS 1 over MQTT 5, and the time from a report being queued to a subscriber having it (loopback).
//! `cargo bench --bench delivery [-- --reports N --rate BYTES_PER_SEC --protocol 3.1.1 --out FILE.json]`; CI runs a
//! short smoke run. With `--rate`, it also drains 10 reports under `outbox.drain_bytes_per_sec`.
//! Starts its own mosquitto on a free port and stops it at the end.

use fieldwatch::config::{MqttConfig, MqttProtocol, SnapshotMode};
use fieldwatch::outbox::Outbox;
use fieldwatch::publish::{self, Presence, Sending};
use fieldwatch::report::{Images, Shot, Shots};

mod common;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

const SNAPSHOT_BYTES: usize = 150 * 1024;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned())
}

fn main() {
    let reports: usize = arg("--reports").and_then(|n| n.parse().ok()).unwrap_or(500);
    let samples: usize = (reports / 10).clamp(5, 100);
    let dir = std::env::temp_dir().join(format!("fieldwatch-bench-delivery-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port();
    std::fs::write(dir.join("m.conf"), format!("listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"))
        .unwrap();
    let mut broker = Command::new("mosquitto")
        .arg("-c")
        .arg(dir.join("m.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mosquitto (run scripts/setup)");
    let until = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > until || broker.try_wait().ok().flatten().is_some() {
            let _ = broker.kill();
            panic!("mosquitto did not start on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let (throughput, latencies, opening, rate, paced) = runtime.block_on(async {
        // A subscriber that notes when each message arrives.
        let mut opts = MqttOptions::new("bench-sub", "127.0.0.1", port);
        opts.set_max_packet_size(16 << 20, 16 << 20);
        let (sub, mut events) = AsyncClient::new(opts, 64);
        sub.subscribe("fieldwatch/#", QoS::AtLeastOnce).await.unwrap();
        let (arrived_tx, mut arrived) = tokio::sync::mpsc::unbounded_channel();
        let listener = tokio::spawn(async move {
            let _sub = sub;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) if p.topic.ends_with("/reports") => {
                        let _ = arrived_tx.send(Instant::now());
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {}
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;

        let outbox = Arc::new(Outbox::open(&dir.join("outbox.db"), 1 << 30).unwrap());
        let protocol = match arg("--protocol").as_deref() {
            Some("3.1.1") => MqttProtocol::V311,
            _ => MqttProtocol::V5,
        };
        let mqtt = MqttConfig { port, protocol, ..Default::default() };
        let topic = publish::reports_topic(&mqtt, "bench", "cam");
        let queue = {
            let (outbox, topic) = (outbox.clone(), topic.clone());
            move || {
                let json = serde_json::json!({
                    "report_id": uuid::Uuid::new_v4().to_string(),
                    "snapshot": { "content_type": "image/jpeg", "width": 1280, "height": 720 },
                });
                let images = Images { snapshot: Some(vec![0x5a; SNAPSHOT_BYTES]), first_seen: None };
                outbox.push("cam", &topic, &serde_json::to_vec(&json).unwrap(), &images);
            }
        };
        let sending = |rate| Sending { drain_bytes_per_sec: rate, snapshots: SnapshotMode::Inline };
        // Throughput: a backlog of `reports` drained by the publisher.
        for _ in 0..reports {
            queue();
        }
        let stop = CancellationToken::new();
        let publisher = tokio::spawn(publish::run(
            mqtt.clone(),
            "bench".into(),
            outbox.clone(),
            sending(0),
            Presence::Quiet,
            stop.clone(),
        ));
        let started = Instant::now();
        for _ in 0..reports {
            arrived.recv().await.unwrap();
        }
        let throughput = reports as f64 / started.elapsed().as_secs_f64();
        // Latency: one report at a time, from the outbox write to the subscriber.
        let mut latencies = Vec::new();
        for _ in 0..samples {
            let queued = Instant::now();
            tokio::task::spawn_blocking(queue.clone()).await.unwrap();
            let at = arrived.recv().await.unwrap();
            latencies.push(at - queued);
        }
        // And from an incident opening on a 1080p frame to the subscriber: both pictures
        // (best and first-seen frame) drawn and encoded, the outbox write, delivery.
        let (event, origin) = common::opened();
        let frame = Arc::new(common::frame_1080p());
        let shot = Shot { frame: frame.clone(), objects: event.objects.clone(), blur: vec![] };
        let shots = Shots { main: shot.clone(), first_seen: Some(shot) };
        let mut opening = Vec::new();
        for _ in 0..samples {
            let opened = Instant::now();
            let (o, e, s, outbox, topic) =
                (origin.clone(), event.clone(), shots.clone(), outbox.clone(), topic.clone());
            tokio::task::spawn_blocking(move || {
                let report = fieldwatch::report::build(&o, &e, &s);
                let json = serde_json::to_vec(&report).unwrap();
                outbox.push("cam", &topic, &json, &report.images);
            })
            .await
            .unwrap();
            let at = arrived.recv().await.unwrap();
            opening.push(at - opened);
        }
        stop.cancel();
        let _ = publisher.await;
        // Paced draining: a backlog of 10 sent at `--rate` bytes per second (default 1 MB/s).
        let rate: u64 = arg("--rate").and_then(|r| r.parse().ok()).unwrap_or(1_000_000);
        for _ in 0..10 {
            queue();
        }
        let stop = CancellationToken::new();
        let publisher = tokio::spawn(publish::run(
            mqtt,
            "bench".into(),
            outbox.clone(),
            sending(rate),
            Presence::Quiet,
            stop.clone(),
        ));
        let started = Instant::now();
        for _ in 0..10 {
            arrived.recv().await.unwrap();
        }
        let paced = (10 * SNAPSHOT_BYTES) as f64 / started.elapsed().as_secs_f64();
        stop.cancel();
        let _ = publisher.await;
        listener.abort();
        (throughput, latencies, opening, rate, paced)
    });
    let _ = broker.kill();
    let _ = broker.wait();
    std::fs::remove_dir_all(&dir).ok();
    let quantiles = |mut d: Vec<Duration>| {
        d.sort();
        (d[d.len() / 2], d[d.len() * 95 / 100], d.len())
    };
    let (median, p95, n) = quantiles(latencies);
    let (open_median, open_p95, _) = quantiles(opening);
    println!(
        "delivery to local mosquitto, MQTT {}, 150 KB snapshots inline, QoS 1",
        arg("--protocol").unwrap_or("5".into())
    );
    println!("throughput  {throughput:.0} reports/s ({reports} reports)");
    println!(
        "latency     median {:.1} ms, p95 {:.1} ms ({} samples, outbox write to subscriber)",
        ms(median),
        ms(p95),
        n
    );
    println!(
        "opening     median {:.1} ms, p95 {:.1} ms (incident opened on a 1080p frame to subscriber: two pictures, outbox, delivery)",
        ms(open_median),
        ms(open_p95)
    );
    println!("paced       {paced:.0} bytes/s with drain_bytes_per_sec = {rate} (10 reports)");
    let json = serde_json::json!({
        "reports": reports, "snapshot_bytes": SNAPSHOT_BYTES, "protocol": arg("--protocol").unwrap_or("5".into()), "reports_per_sec": throughput,
        "latency_ms": { "median": ms(median), "p95": ms(p95), "samples": n },
        "opening_to_subscriber_ms": { "median": ms(open_median), "p95": ms(open_p95), "samples": n },
        "paced": { "limit_bytes_per_sec": rate, "bytes_per_sec": paced },
    });
    if let Some(out) = arg("--out") {
        std::fs::write(&out, serde_json::to_string_pretty(&json).unwrap()).unwrap();
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
