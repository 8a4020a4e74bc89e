//! A seeded mutation fuzzer's parts: a small PRNG, JSON values of every shape, and
//! structural and byte-level mutations of a known-good input.
//!
//! Runs are reproducible: the seed is printed, and `VETH_ROUTE_FUZZ_SEED` replays it;
//! `VETH_ROUTE_FUZZ_ROUNDS` scales a run (CI uses each test's bounded default).

use serde_json::{json, Map, Value};

/// splitmix64: tiny, fast, and good enough to pick mutations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// From `VETH_ROUTE_FUZZ_SEED`, else from the clock; prints the seed either way so a
    /// failing run can be replayed.
    pub fn from_env(test: &str) -> Rng {
        let seed = std::env::var("VETH_ROUTE_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            now.as_nanos() as u64 ^ u64::from(std::process::id())
        });
        eprintln!("{test}: VETH_ROUTE_FUZZ_SEED={seed}");
        Rng(seed)
    }

    /// A fixed seed.
    pub fn seeded(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `1/n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// One element of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// The number of rounds: `VETH_ROUTE_FUZZ_ROUNDS`, else `default`.
pub fn rounds(default: usize) -> usize {
    std::env::var("VETH_ROUTE_FUZZ_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// Strings that break parsers and the kernel's name rules.
const NASTY: &[&str] = &[
    "",
    " ",
    ".",
    "..",
    "/",
    "a/b",
    "eth0",
    "eth0:1",
    "x\u{0}y",
    "é",
    "ünïcødé-too-long-name",
    "0",
    "-1",
    "true",
    "null",
    "169.254.1.1",
    "10.10.10.19/24",
    "::1",
    "fd00::5/64",
    "0.0.0.0/0",
    "nonsense",
    "{",
    "\\",
    "\n",
    "veth-route",
    "a b",
];

/// A random JSON value of any type, nested at most `depth` levels.
pub fn any_value(rng: &mut Rng, depth: usize) -> Value {
    match rng.below(if depth == 0 { 6 } else { 8 }) {
        0 => Value::Null,
        1 => json!(rng.one_in(2)),
        2 => json!(*rng.pick(&[0i64, 1, -1, 67, 68, 1500, 65535, 65536, i64::MAX, i64::MIN])),
        3 => json!(*rng.pick(&[0.5f64, -0.0, 1e300])),
        4 | 5 => json!(*rng.pick(NASTY)),
        6 => Value::Array((0..rng.below(3)).map(|_| any_value(rng, depth - 1)).collect()),
        _ => {
            let mut m = Map::new();
            for _ in 0..rng.below(3) {
                m.insert(rng.pick(NASTY).to_string(), any_value(rng, depth - 1));
            }
            Value::Object(m)
        }
    }
}

/// One structural mutation of `v`: a value replaced (by one of `candidates` for its key,
/// or by anything), a key removed, or an unknown key added, at any depth.
pub fn mutate_value(rng: &mut Rng, v: &mut Value, candidates: &dyn Fn(&str, &mut Rng) -> Option<Value>) {
    match v {
        Value::Object(m) if !m.is_empty() && !rng.one_in(8) => {
            let keys: Vec<String> = m.keys().cloned().collect();
            let key = rng.pick(&keys).clone();
            match rng.below(6) {
                0 => {
                    m.remove(&key);
                }
                1 => {
                    m.insert(rng.pick(NASTY).to_string(), any_value(rng, 2));
                }
                2 | 3 => {
                    let new = candidates(&key, rng).unwrap_or_else(|| any_value(rng, 2));
                    m.insert(key, new);
                }
                _ => mutate_value(rng, m.get_mut(&key).expect("key"), candidates),
            }
        }
        Value::Array(a) if !a.is_empty() && !rng.one_in(4) => {
            let i = rng.below(a.len());
            mutate_value(rng, &mut a[i], candidates);
        }
        other => *other = any_value(rng, 2),
    }
}

/// Byte-level damage to serialized JSON: truncation, a flipped byte, a duplicated run.
pub fn mutate_bytes(rng: &mut Rng, bytes: &mut Vec<u8>) {
    if bytes.is_empty() {
        bytes.push(b'{');
        return;
    }
    let i = rng.below(bytes.len());
    match rng.below(3) {
        0 => bytes.truncate(i),
        1 => bytes[i] ^= 1 << rng.below(8),
        _ => {
            let end = (i + 1 + rng.below(8)).min(bytes.len());
            let run = bytes[i..end].to_vec();
            bytes.splice(i..i, run);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeded_runs_repeat() {
        let (mut a, mut b) = (Rng::seeded(7), Rng::seeded(7));
        assert_eq!((0..8).map(|_| a.next_u64()).collect::<Vec<_>>(), (0..8).map(|_| b.next_u64()).collect::<Vec<_>>());
        let mut v = json!({"a": 1, "b": [1, 2]});
        let before = v.clone();
        let mut changed = false;
        for _ in 0..20 {
            mutate_value(&mut a, &mut v, &|_, _| None);
            changed |= v != before;
        }
        assert!(changed);
    }
}
