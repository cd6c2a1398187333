import Foundation
import LocalFarm
import Testing

extension Integration {
    /// `dubfarm model bench` as a user runs it, in its own process: the sgemm peak windows
    /// between frames switch OpenBLAS to its own threads and end them again each time
    /// (`BLAS.releaseThreads`), so a run must finish with every figure present.
    @Suite("Model bench command") struct ModelBenchCommandTests {
        @Test("model bench --threads 2 --json reports frames per second, the peak and every module")
        func benchReports() throws {
            let run = try ProcessControl.run(dubfarmExecutable, ["model", "bench", "--config", "tiny", "--threads", "2",
                                                                 "--frames", "4", "--json"], timeout: 300)
            #expect(run.status == 0, "\(run.stderr)")
            let object = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any]
            let report = try #require(object, "not a JSON object: \(run.stdout)")
            #expect((report["fps"] as? Double ?? 0) > 0)
            let peak = report["sgemm_peak_gflops"] as? Double ?? 0, before = report["sgemm_peak_before_gflops"] as? Double ?? 0
            #expect(peak > 0 && peak >= before)
            #expect((report["decoder_peak_share"] as? Double ?? 0) > 0)
            let modules = try #require(report["modules"] as? [String: Any])
            #expect(Set(modules.keys).isSuperset(of: ["encode", "quantize", "swap", "audio", "lipsync", "decode"]), "\(modules.keys)")
        }
    }
}
