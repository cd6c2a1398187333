import COpenBLAS

/// The one door to OpenBLAS: single-precision matrix products and the library's thread count.
///
/// Matrices are row-major. Only typed Swift pointers cross this API; nothing from the C headers
/// leaks to callers.
package enum BLAS {
    /// Sets how many threads OpenBLAS uses for every later call (process-wide).
    package static func setThreads(_ n: Int) {
        openblas_set_num_threads(Int32(max(1, n)))
    }

    /// The thread count OpenBLAS currently uses.
    package static var threads: Int { Int(openblas_get_num_threads()) }

    /// Ends OpenBLAS's own worker threads, which otherwise spin (`sched_yield`) for about
    /// 2²⁸ cycles (~0.1 s) after each multi-threaded call, taking cores from whatever runs next.
    /// The next multi-threaded call starts them again.
    package static func releaseThreads() {
        _ = blas_thread_shutdown_()
    }

    /// `C = alpha * op(A) * op(B) + beta * C` with `op(A)` of shape `m × k` and `op(B)` `k × n`,
    /// all row-major with the given leading dimensions.
    package static func sgemm(
        transA: Bool = false, transB: Bool = false,
        m: Int, n: Int, k: Int,
        alpha: Float = 1,
        a: UnsafePointer<Float>, lda: Int,
        b: UnsafePointer<Float>, ldb: Int,
        beta: Float = 0,
        c: UnsafeMutablePointer<Float>, ldc: Int
    ) {
        cblas_sgemm(CblasRowMajor,
                    transA ? CblasTrans : CblasNoTrans,
                    transB ? CblasTrans : CblasNoTrans,
                    Int32(m), Int32(n), Int32(k), alpha,
                    a, Int32(lda), b, Int32(ldb), beta, c, Int32(ldc))
    }
}
