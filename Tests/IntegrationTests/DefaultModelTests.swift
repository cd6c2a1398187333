import FaceAnalysis
import FarmProtocol
import Foundation
import LocalFarm
import Testing

/// The committed trained default, `models/dubfarm-small/` in this checkout.
let committedModelDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .deletingLastPathComponent().appendingPathComponent("models/dubfarm-small")

extension Integration {
    /// The weights are committed (models/dubfarm-small): only the face models may be missing.
    @Suite("Default model", .serialized,
           .enabled(if: FileManager.default.fileExists(atPath: HaarCascade.defaultPath), "needs the face models"))
    struct DefaultModelTests {
        @Test("a dub worker given no --model loads the committed weights, says so in its log and advertises NAME@hash; untrained:small on request")
        func defaultWorker() async throws {
            let farm = try await TestFarm.start(workers: 0)
            defer { farm.shutdown() }
            var env = farm.environment
            env.removeValue(forKey: "DUBFARM_MODEL")
            farm.environment = env
            try farm.startWorker("default", stage: "dub")
            try farm.waitForWorkers(1, "the default dub worker", timeout: 120)
            let w = try #require(try farm.client().call(.workers, as: [WorkerView].self).first)
            let model = try #require(w.model)
            let parts = model.split(separator: "@")
            #expect(parts.count == 2 && parts[1].count == 16 && !model.contains("untrained"), "\(model)")
            let log = farm.tail("default", lines: 200)
            #expect(log.contains("model loaded: \(model) (trained weights from \(committedModelDirectory.standardizedFileURL.path))"), "\(log)")
            #expect(!log.contains("has no trained face swap"), "the committed swap is trained: a job's --face is applied")

            try farm.startWorker("seeded", stage: "dub", extra: ["--model", "untrained:small"])
            try farm.waitForWorkers(2, "the seeded dub worker", timeout: 120)
            let seeded = try farm.client().call(.workers, as: [WorkerView].self).first { $0.name == "seeded" }
            #expect(seeded?.model == "small@untrained-seed-1")
            #expect(farm.tail("seeded", lines: 200).contains("UNTRAINED"))
        }
    }
}
