//! Adam (β1, β2, ε as in PyTorch's `torch.optim.Adam`, no weight decay), applied row by row so
//! the update can run in the same pass that computes each latent's gradient. Every parameter
//! is updated at every step, including rows whose gradient is zero, so the moments decay
//! exactly as in a dense optimiser.

/// First and second moments of one parameter array.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Moments {
    pub m: Vec<f32>,
    pub v: Vec<f32>,
}

impl Moments {
    pub fn zeros(n: usize) -> Self {
        Self { m: vec![0.0; n], v: vec![0.0; n] }
    }
}

/// The constants of one optimiser step.
#[derive(Debug, Clone, Copy)]
pub struct AdamStep {
    b1: f32,
    b2: f32,
    eps: f32,
    /// lr / (1 − β1^t)
    step_size: f32,
    /// sqrt(1 − β2^t)
    bc2_sqrt: f32,
}

impl AdamStep {
    /// Step number `t` counts from 1.
    pub fn new(lr: f32, b1: f32, b2: f32, eps: f32, t: u64) -> Self {
        let t = t.min(i32::MAX as u64) as i32;
        let bc1 = 1.0 - (b1 as f64).powi(t);
        let bc2 = 1.0 - (b2 as f64).powi(t);
        Self { b1, b2, eps, step_size: (lr as f64 / bc1) as f32, bc2_sqrt: bc2.sqrt() as f32 }
    }

    /// p ← p − step_size · m / (sqrt(v)/sqrt(bc2) + ε), as PyTorch computes it.
    #[inline]
    pub fn update(&self, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
        for i in 0..p.len() {
            let gi = g[i];
            let mi = self.b1 * m[i] + (1.0 - self.b1) * gi;
            let vi = self.b2 * v[i] + (1.0 - self.b2) * gi * gi;
            m[i] = mi;
            v[i] = vi;
            p[i] -= self.step_size * mi / (vi.sqrt() / self.bc2_sqrt + self.eps);
        }
    }

    #[inline]
    pub fn update1(&self, p: &mut f32, g: f32, m: &mut f32, v: &mut f32) {
        self.update(std::slice::from_mut(p), &[g], std::slice::from_mut(m), std::slice::from_mut(v));
    }
}
