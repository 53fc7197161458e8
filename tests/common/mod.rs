//! Shared helpers for the integration tests: fixture paths, the real models, tensor comparison.
#![allow(dead_code)]

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use knowlens::{Model, Precision};

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(rel)
}

pub fn tiny(arch: &str) -> Model {
    Model::load(&fixture(&format!("tiny/{arch}")), Precision::F32).expect("tiny model loads")
}

/// Expected tensors written by tools/make_tiny_models.py or tools/make_golden_real.py.
pub fn expected(rel: &str) -> std::collections::HashMap<String, Tensor> {
    candle_core::safetensors::load(fixture(rel), &Device::Cpu).expect("fixture loads")
}

/// A real model by preset name, fetched into the cache on first use.
pub fn real(name: &str, precision: Precision) -> Model {
    let preset = knowlens::fetch::preset(name).expect("known preset");
    let path = knowlens::fetch::ensure(preset).expect("model fetch");
    Model::load(&path, precision).expect("real model loads")
}

pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
    assert_eq!(a.dims(), b.dims(), "shapes differ");
    (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

pub fn max_abs(a: &Tensor) -> f32 {
    a.abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
}

/// ‖a − b‖ / ‖b‖.
pub fn rel_err(a: &Tensor, b: &Tensor) -> f32 {
    let num = (a - b).unwrap().sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
    let den = b.sqr().unwrap().sum_all().unwrap().sqrt().unwrap().to_scalar::<f32>().unwrap();
    num / den
}

pub fn ids_rows(t: &Tensor) -> Vec<Vec<u32>> {
    t.to_dtype(candle_core::DType::I64)
        .unwrap()
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|r| r.into_iter().map(|x| x as u32).collect())
        .collect()
}
