/// What a worker can run, and which work it may take: the rules the coordinator's claim applies
/// in SQL (`FarmStore.claimSegment`) and `status`/`jobs` apply to explain work that waits.
///
/// A worker advertises one stage (`dub`, `passthrough`, `sleep`, …), its thread count and the
/// model it holds, as an identifier `NAME@VERSION` (`small@untrained-seed-1`,
/// `mymodel@3f2a…` for weights loaded from a directory). A job runs one stage and may require a
/// model, either by name (`small`: any version) or exactly (`small@untrained-seed-1`).
package struct WorkerCapabilities: Sendable, Hashable {
    package var stage: String
    package var model: String?
    package var threads: Int

    package init(stage: String, model: String?, threads: Int) {
        self.stage = stage
        self.model = model
        self.threads = threads
    }

    /// Whether this worker may take segments of a job running `stage` that requires `model`.
    package func canRun(stage jobStage: String, model required: String?) -> Bool {
        guard stage == jobStage else { return false }
        guard let required else { return true }
        return Self.model(model, satisfies: required)
    }

    /// Whether an advertised model identifier satisfies a job's requirement: equal, or the
    /// requirement names the model without a version (`small` is satisfied by `small@v2`).
    /// A worker that holds no model satisfies no requirement.
    package static func model(_ advertised: String?, satisfies required: String) -> Bool {
        guard let advertised, !required.isEmpty else { return false }
        if advertised == required { return true }
        return !required.contains("@") && modelName(advertised) == required
    }

    /// The name part of a model identifier (`small@untrained-seed-1` → `small`).
    package static func modelName(_ id: String) -> String {
        id.split(separator: "@", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? id
    }
}

/// Why a job's pending segments wait, when no connected worker can take them; `nil` when at
/// least one connected worker is compatible (the segments only wait their turn).
///
/// - Parameters:
///   - stage: the job's stage; `model`: the model it requires, if any.
///   - workers: the capabilities of the workers connected now.
package func waitingReason(stage: String, model: String?, workers: [WorkerCapabilities]) -> String? {
    if workers.contains(where: { $0.canRun(stage: stage, model: model) }) { return nil }
    if workers.isEmpty { return "waiting for a worker: none is connected" }
    let sameStage = workers.filter { $0.stage == stage }
    guard let model else {
        let stages = Set(workers.map(\.stage)).sorted().joined(separator: ", ")
        return "waiting for a worker with stage \(stage) (connected workers run: \(stages))"
    }
    if sameStage.isEmpty {
        return "waiting for a worker with stage \(stage) and model \(model)"
    }
    let held = Set(sameStage.map { $0.model ?? "no model" }).sorted().joined(separator: ", ")
    return "waiting for a worker with model \(model) (connected \(stage) workers hold: \(held))"
}
