import DubfarmCore
import Testing

@Suite("Worker capabilities")
struct CapabilitiesTests {
    @Test("model identifiers: equal, or a requirement without a version matches every version", arguments: [
        ("small@untrained-seed-1", "small", true),
        ("small@untrained-seed-1", "small@untrained-seed-1", true),
        ("small@untrained-seed-1", "small@other", false),
        ("small@untrained-seed-1", "paper", false),
        ("smaller@1", "small", false),
        ("small", "small", true),
        ("small", "small@1", false),
        ("mymodel@3f2a", "mymodel", true),
    ])
    func modelMatching(advertised: String, required: String, expected: Bool) {
        #expect(WorkerCapabilities.model(advertised, satisfies: required) == expected)
    }

    @Test("a worker without a model satisfies no requirement; an empty requirement is never satisfied")
    func noModel() {
        #expect(!WorkerCapabilities.model(nil, satisfies: "small"))
        #expect(!WorkerCapabilities.model("small@1", satisfies: ""))
        #expect(WorkerCapabilities.modelName("small@a@b") == "small")
        #expect(WorkerCapabilities.modelName("plain") == "plain")
    }

    @Test("stage must match; a job without a model runs on any worker of its stage")
    func stageAndModel() {
        let dubSmall = WorkerCapabilities(stage: "dub", model: "small@untrained-seed-1", threads: 2)
        #expect(dubSmall.canRun(stage: "dub", model: nil))
        #expect(dubSmall.canRun(stage: "dub", model: "small"))
        #expect(!dubSmall.canRun(stage: "dub", model: "paper"))
        #expect(!dubSmall.canRun(stage: "passthrough", model: nil))
        #expect(!WorkerCapabilities(stage: "passthrough", model: nil, threads: 1).canRun(stage: "passthrough", model: "small"))
    }

    @Test("why work waits: nothing when a compatible worker is connected; otherwise the missing stage or model, and what is connected")
    func waiting() {
        let small = WorkerCapabilities(stage: "dub", model: "small@untrained-seed-1", threads: 2)
        let pass = WorkerCapabilities(stage: "passthrough", model: nil, threads: 1)
        #expect(waitingReason(stage: "dub", model: "small", workers: [pass, small]) == nil)
        #expect(waitingReason(stage: "dub", model: nil, workers: [small]) == nil)
        #expect(waitingReason(stage: "dub", model: "paper", workers: []) == "waiting for a worker: none is connected")
        #expect(waitingReason(stage: "dub", model: "paper", workers: [small, pass])
                == "waiting for a worker with model paper (connected dub workers hold: small@untrained-seed-1)")
        #expect(waitingReason(stage: "dub", model: "paper", workers: [pass]) == "waiting for a worker with stage dub and model paper")
        #expect(waitingReason(stage: "dub", model: nil, workers: [pass])
                == "waiting for a worker with stage dub (connected workers run: passthrough)")
    }
}
