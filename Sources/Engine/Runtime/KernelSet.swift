import EngineKernels
import EngineKernelsAVX2
import Foundation

/// The vector kernels an operation runs: one of the two builds of the `EngineKernels` sources.
///
/// The engine's own loops (activations, softmax, GroupNorm, Winograd transforms) are written on
/// `SIMD8<Float>`. Compiled for the baseline x86-64 target each such operation is two SSE
/// instructions; the `avx2` build (`-target-cpu haswell`) makes it one 256-bit instruction.
/// ``active`` is the AVX2 build when the CPU has every feature that target assumes (AVX2, FMA,
/// BMI1/2, F16C, MOVBE, LZCNT), else the baseline one. `DUBFARM_KERNELS=baseline` forces the
/// baseline build (for comparisons); the results of the two are identical.
public struct KernelSet: Sendable {
    /// `baseline` or `avx2`.
    public let name: String
    let silu: @Sendable (UnsafeMutablePointer<Float>, Int) -> Void
    let gelu: @Sendable (UnsafeMutablePointer<Float>, Int) -> Void
    let softmaxRow: @Sendable (UnsafeMutablePointer<Float>, Int) -> Void
    let moments: @Sendable (UnsafePointer<Float>, Int) -> (mean: Double, variance: Double)
    let affine: @Sendable (UnsafePointer<Float>, UnsafeMutablePointer<Float>, Int, Float, Float, Bool) -> Void
    let winogradInput: @Sendable (UnsafePointer<Float>, Int, Int, Int, Int, Int, Int, Bool,
                                  UnsafePointer<Float>?, UnsafePointer<Float>?, Bool,
                                  Int, Int, Int, Int, Int, Int, UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>) -> Void
    let winogradOutput: @Sendable (UnsafePointer<Float>, Int, UnsafePointer<Float>?, UnsafePointer<Float>?,
                                   UnsafeMutablePointer<Float>, Int, Int, Int, Int, Int, Int, Int, Int,
                                   UnsafeMutablePointer<Float>) -> Void

    /// The build for the baseline target (any x86-64 or arm64 CPU).
    public static let baseline = KernelSet(
        name: "baseline",
        silu: { EngineKernels.Kernels.silu($0, $1) },
        gelu: { EngineKernels.Kernels.gelu($0, $1) },
        softmaxRow: { EngineKernels.Kernels.softmaxRow($0, $1) },
        moments: { EngineKernels.Kernels.moments($0, $1) },
        affine: { EngineKernels.Kernels.affine($0, $1, $2, scale: $3, shift: $4, silu: $5) },
        winogradInput: {
            EngineKernels.Kernels.winogradInput(x: $0, channels: $1, srcH: $2, srcW: $3, h: $4, w: $5, padding: $6, upsample: $7,
                                                scale: $8, shift: $9, silu: $10, tileRows: $11, $12, tilesPerRow: $13,
                                                ph: $14, twV: $15, ntS: $16, v: $17, scratch: $18)
        },
        winogradOutput: {
            EngineKernels.Kernels.winogradOutput(m: $0, channels: $1, bias: $2, residual: $3, out: $4, oh: $5, ow: $6,
                                                 tileRows: $7, $8, tilesPerRow: $9, ph: $10, twV: $11, ntS: $12, scratch: $13)
        })

    /// The build for AVX2 CPUs (only run where ``cpuSupportsAVX2`` holds).
    public static let avx2 = KernelSet(
        name: "avx2",
        silu: { EngineKernelsAVX2.Kernels.silu($0, $1) },
        gelu: { EngineKernelsAVX2.Kernels.gelu($0, $1) },
        softmaxRow: { EngineKernelsAVX2.Kernels.softmaxRow($0, $1) },
        moments: { EngineKernelsAVX2.Kernels.moments($0, $1) },
        affine: { EngineKernelsAVX2.Kernels.affine($0, $1, $2, scale: $3, shift: $4, silu: $5) },
        winogradInput: {
            EngineKernelsAVX2.Kernels.winogradInput(x: $0, channels: $1, srcH: $2, srcW: $3, h: $4, w: $5, padding: $6, upsample: $7,
                                                    scale: $8, shift: $9, silu: $10, tileRows: $11, $12, tilesPerRow: $13,
                                                    ph: $14, twV: $15, ntS: $16, v: $17, scratch: $18)
        },
        winogradOutput: {
            EngineKernelsAVX2.Kernels.winogradOutput(m: $0, channels: $1, bias: $2, residual: $3, out: $4, oh: $5, ow: $6,
                                                     tileRows: $7, $8, tilesPerRow: $9, ph: $10, twV: $11, ntS: $12, scratch: $13)
        })

    /// Whether this CPU (and kernel) runs the `avx2` build: x86-64 Linux whose `/proc/cpuinfo`
    /// lists every feature of `-target-cpu haswell`.
    public static let cpuSupportsAVX2: Bool = {
        #if arch(x86_64) && os(Linux)
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
              let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") }) else { return false }
        let flags = Set(line.split(separator: " ").map(String.init))
        return ["avx", "avx2", "fma", "bmi1", "bmi2", "f16c", "movbe", "abm", "popcnt", "sse4_2"].allSatisfy(flags.contains)
        #else
        return false
        #endif
    }()

    /// The build every context uses unless told otherwise: `avx2` where supported, unless
    /// `DUBFARM_KERNELS=baseline`.
    public static let active: KernelSet = {
        if ProcessInfo.processInfo.environment["DUBFARM_KERNELS"] == "baseline" { return .baseline }
        return cpuSupportsAVX2 ? .avx2 : .baseline
    }()

    /// The builds this machine can run (for tests that compare them).
    public static var available: [KernelSet] { cpuSupportsAVX2 ? [.baseline, .avx2] : [.baseline] }
}
