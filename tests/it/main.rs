//! Integration tests: one binary, real servers (see `support`).

#[path = "../../benches/common/mod.rs"]
mod bench_common;
mod browser;
mod cli;
mod clock;
mod corrupt;
mod delivery;
mod demo;
mod dispatch;
mod e2e;
mod incidents;
mod ingest;
mod logs;
mod models;
mod package;
mod person_model;
mod real_street;
mod reconnect;
mod reload;
mod remote;
mod replay;
mod squares_model;
mod storage;
mod supervision;
mod support;
mod tuning;
mod webdriver;
mod workbench;
