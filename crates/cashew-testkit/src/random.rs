//! A small random generator for tests that build requests at random: a fixed
//! sequence for each seed, so that a failure is found again by running the test
//! again (xorshift64*).

pub struct Random(u64);

impl Random {
    /// `seed` must not be 0.
    pub fn new(seed: u64) -> Random {
        assert_ne!(seed, 0, "xorshift needs a seed other than 0");
        Random(seed)
    }

    pub fn number(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.number() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_sequence_and_every_value_comes() {
        let draw = |seed| {
            let mut r = Random::new(seed);
            (0..1000).map(|_| r.below(7)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        let seen = draw(3);
        assert!((0..7).all(|v| seen.contains(&v)), "{seen:?}");
    }
}
