/// The processing stages a worker can run, and what each needs in its tasks.
///
/// A job names one stage; the coordinator refuses names not listed here, and sends a task only
/// the inputs its stage reads: the dub track's PCM (64 kB per second of video, read
/// and re-sent for every segment) goes only to stages that use it.
package struct StageInfo: Sendable, Hashable {
    /// The name jobs and workers use (`--stage`).
    package var name: String
    /// Whether the stage reads the task's dub audio window.
    package var usesAudio: Bool
    /// Whether the stage reads the job's source face.
    package var usesFace: Bool
    /// Whether it is meant for tests and benchmarks only.
    package var forTesting: Bool
}

package enum StageCatalog {
    /// Every stage, product stages first.
    package static let all: [StageInfo] = [
        StageInfo(name: "dub", usesAudio: true, usesFace: true, forTesting: false),
        StageInfo(name: "passthrough", usesAudio: false, usesFace: false, forTesting: false),
        StageInfo(name: "sleep", usesAudio: false, usesFace: false, forTesting: true),
        StageInfo(name: "sleep-copy", usesAudio: false, usesFace: false, forTesting: true),
        StageInfo(name: "fail", usesAudio: false, usesFace: false, forTesting: true),
    ]

    /// The stage called `name`, if there is one.
    package static func stage(_ name: String) -> StageInfo? {
        all.first { $0.name == name }
    }

    /// The names, in words, for error messages: "dub or passthrough; sleep, sleep-copy and fail
    /// for tests and benchmarks".
    package static var namesInWords: String {
        let product = all.filter { !$0.forTesting }.map(\.name)
        let testing = all.filter(\.forTesting).map(\.name)
        return "\(product.joined(separator: " or ")); \(testing.dropLast().joined(separator: ", ")) and \(testing.last!) for tests and benchmarks"
    }
}
