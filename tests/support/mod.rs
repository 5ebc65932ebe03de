#![allow(dead_code)]
pub mod anthropic_wire;
pub mod cluster;
pub mod mock_upstream;
pub mod proxy;
pub mod raw_http;
pub mod stored;
