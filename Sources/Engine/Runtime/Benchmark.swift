import BLAS
import Foundation

/// Throughput measurements for reports.
package enum Benchmark {
    /// Best observed sgemm GFLOP/s on square `n × n` matrices with the context's thread count,
    /// over about `seconds` of repetitions (the machine's practical peak for the engine).
    package static func sgemmPeak(_ ctx: ComputeContext, n: Int = 1024, seconds: Double = 0.4) -> Double {
        let a = Tensor.zeros([n, n]), b = Tensor.zeros([n, n]), c = Tensor.zeros([n, n])
        var rng = SeededRandom(seed: 1)
        for i in 0..<(n * n) { a.data[i] = rng.uniform(-1, 1); b.data[i] = rng.uniform(-1, 1) }
        // OpenBLAS's own threading: the honest machine peak, independent of the engine's split
        BLAS.setThreads(ctx.threads)
        defer {
            BLAS.setThreads(1)
            // OpenBLAS's idle threads would spin for ~0.1 s, through the frames timed next
            if ctx.threads > 1 { BLAS.releaseThreads() }
        }
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

    /// CPU seconds used so far by all threads of this process (user and system). Unlike wall
    /// time it does not grow while the process waits for a core, so on a shared, overloaded
    /// machine `FLOPs / CPU seconds` still shows how much work the engine does per FLOP
    /// (split overheads, duplicated packing) even when wall-clock figures are dominated by
    /// other processes.
    package static func cpuSeconds() -> Double {
        var ts = timespec()
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts)
        return Double(ts.tv_sec) + Double(ts.tv_nsec) / 1e9
    }

    /// Single-threaded 1024² sgemm GFLOP per CPU second (median of `reps`): one core's peak,
    /// measured in CPU time so that it is comparable with ``cpuSeconds()``-based figures.
    package static func sgemmPeakPerCPUSecond(n: Int = 1024, reps: Int = 7) -> Double {
        let a = Tensor.zeros([n, n]), b = Tensor.zeros([n, n]), c = Tensor.zeros([n, n])
        var rng = SeededRandom(seed: 1)
        for i in 0..<(n * n) { a.data[i] = rng.uniform(-1, 1); b.data[i] = rng.uniform(-1, 1) }
        let saved = BLAS.threads
        BLAS.setThreads(1)
        defer { BLAS.setThreads(saved) }
        BLAS.sgemm(m: n, n: n, k: n, a: a.data, lda: n, b: b.data, ldb: n, c: c.data, ldc: n)
        var rates: [Double] = []
        for _ in 0..<reps {
            let t0 = cpuSeconds()
            BLAS.sgemm(m: n, n: n, k: n, a: a.data, lda: n, b: b.data, ldb: n, c: c.data, ldc: n)
            rates.append(2 * Double(n * n * n) / (cpuSeconds() - t0) / 1e9)
        }
        return rates.sorted()[reps / 2]
    }

    /// The 1-minute load average (0 where unavailable).
    package static func loadAverage() -> Double {
        var l = [Double](repeating: 0, count: 3)
        return getloadavg(&l, 3) > 0 ? l[0] : 0
    }

    /// Monotonic seconds.
    package static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

    /// Peak resident set size of this process in bytes.
    package static func peakRSSBytes() -> Int {
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
