//! Integration tests: one binary, real servers (see `support`).

mod cli;
mod e2e;
mod person_model;
mod reconnect;
mod squares_model;
mod support;
