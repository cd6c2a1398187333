import BLAS
import Foundation

/// Throughput measurements for reports.
public enum Benchmark {
    /// Best observed sgemm GFLOP/s on square `n × n` matrices with the context's thread count,
    /// over about `seconds` of repetitions (the machine's practical peak for the engine).
    public static func sgemmPeak(_ ctx: ComputeContext, n: Int = 1024, seconds: Double = 0.4) -> Double {
        let a = Tensor.zeros([n, n]), b = Tensor.zeros([n, n]), c = Tensor.zeros([n, n])
        var rng = SeededRandom(seed: 1)
        for i in 0..<(n * n) { a.data[i] = rng.uniform(-1, 1); b.data[i] = rng.uniform(-1, 1) }
        // OpenBLAS's own threading: the honest machine peak, independent of the engine's split
        BLAS.setThreads(ctx.threads)
        defer { BLAS.setThreads(1) }
        BLAS.sgemm(m: n, n: n, k: n, a: a.data, lda: n, b: b.data, ldb: n, c: c.data, ldc: n)
        var best = 0.0
        let start = now()
        var reps = 0
        while now() - start < seconds || reps < 3 {
            let t0 = now()
            BLAS.sgemm(m: n, n: n, k: n, a: a.data, lda: n, b: b.data, ldb: n, c: c.data, ldc: n)
            best = max(best, 2 * Double(n * n * n) / (now() - t0) / 1e9)
            reps += 1
        }
        return best
    }

    /// Monotonic seconds.
    public static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// Peak resident set size of this process in bytes.
    public static func peakRSSBytes() -> Int {
        var u = rusage()
        #if os(Linux)
        getrusage(RUSAGE_SELF.rawValue, &u)
        return u.ru_maxrss * 1024
        #else
        getrusage(RUSAGE_SELF, &u)
        return u.ru_maxrss
        #endif
    }
}
