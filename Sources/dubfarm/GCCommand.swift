import ArgumentParser
import DubfarmCore
import FarmClient
import FarmProtocol
import Foundation

struct GC: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Free the coordinator's disk: finished jobs' files and uploads no job needs any more.",
        discussion: """
            Removes the inputs and output of jobs that finished (done, failed or cancelled) more \
            than --older-than ago, uploaded files that no unfinished job uses and that were last \
            used that long ago, and uploads cut off that long ago. A job that is not finished keeps \
            everything; a job whose files were removed stays in `jobs` and `logs` (it can no longer \
            be fetched or retried). The coordinator does this by itself when media.retention_hours \
            is set.

            Examples: dubfarm gc --dry-run · dubfarm gc --older-than 12h · dubfarm gc --older-than 0
            """)
    @Option(name: .long, help: ArgumentHelp("Age: 30m, 12h, 7d or seconds (0: everything finished).", valueName: "AGE"))
    var olderThan: String = "7d"
    @Flag(name: .long, help: "Only say what would be removed.") var dryRun = false
    @OptionGroup var client: ClientOptions

    func validate() throws {
        guard Self.seconds(olderThan) != nil else { throw ValidationError("--older-than '\(olderThan)': give 30m, 12h, 7d or a number of seconds") }
    }

    /// `30m`, `12h`, `7d`, `90s` or plain seconds.
    static func seconds(_ s: String) -> Double? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800]
        if let last = s.last, let unit = units[last], let n = Double(s.dropLast()), n >= 0 { return n * unit }
        if let n = Double(s), n >= 0, n.isFinite { return n }
        return nil
    }

    func run() throws {
        let r = try client.client().call(.gc(GCRequest(olderThanSeconds: Self.seconds(olderThan)!, dryRun: dryRun)), as: GCReport.self)
        if client.json { return try printJSON(r) }
        let verb = dryRun ? "would remove" : "removed"
        let mib = String(format: "%.1f MiB", Double(r.bytes) / 1_048_576)
        print("\(verb) the files of \(r.jobs.count) finished job\(r.jobs.count == 1 ? "" : "s")"
              + (r.jobs.isEmpty ? "" : " (\(r.jobs.map(String.init).joined(separator: ", ")))")
              + ", \(r.uploads) unused upload\(r.uploads == 1 ? "" : "s") and \(r.partialUploads) cut-off upload\(r.partialUploads == 1 ? "" : "s"): \(mib)")
    }
}
