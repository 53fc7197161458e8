//! Seeded randomness whose output is fixed by its definition (SplitMix64), so a seed gives the
//! same initial weights and the same shuffles on every machine and with every version of the
//! crate's dependencies. Streams are derived from (seed, purpose, index) rather than advanced
//! across the run, so nothing but the counters has to be checkpointed to resume exactly.

pub struct SplitMix64(pub u64);

impl SplitMix64 {
    /// A generator for one purpose (`tag`) and index (e.g. the buffer generation) of a run.
    pub fn derive(seed: u64, tag: u64, index: u64) -> Self {
        let mut s = SplitMix64(seed ^ tag.wrapping_mul(0xD1B5_4A32_D192_ED03));
        let a = s.next_u64();
        SplitMix64(a ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 random bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Standard normal (Box–Muller; one value per call, the second is dropped for simplicity).
    pub fn normal(&mut self) -> f64 {
        let u1 = 1.0 - self.next_f64(); // (0, 1]
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Uniform integer in [0, n) (n > 0); the modulo bias is below 2^-40 for any n used here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Fisher–Yates.
pub fn shuffle<T>(v: &mut [T], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

/// Purposes of derived streams.
pub const TAG_INIT: u64 = 1;
pub const TAG_SHUFFLE: u64 = 2;
/// Token sampling in generation (one stream per prompt row).
pub const TAG_SAMPLE: u64 = 3;
