/// A deterministic pseudo-random generator (SplitMix64), identical on every platform and run.
///
/// Used for seeded untrained weights and for tests; never the system RNG, so the same seed gives
/// the same bytes everywhere.
package struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    package init(seed: UInt64) { state = seed &+ 0x9E37_79B9_7F4A_7C15 }

    package mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 24 random bits.
    package mutating func nextUnit() -> Float { Float(next() >> 40) * (1.0 / 16_777_216.0) }

    /// Uniform in `[lo, hi)`.
    package mutating func uniform(_ lo: Float, _ hi: Float) -> Float { lo + (hi - lo) * nextUnit() }

    /// `count` uniform values in `[lo, hi)`.
    package mutating func uniforms(_ count: Int, _ lo: Float = -1, _ hi: Float = 1) -> [Float] {
        (0..<count).map { _ in uniform(lo, hi) }
    }
}
