import ArgumentParser
import DubfarmCore
import FarmClient
import FarmMonitor
import FarmProtocol
import Foundation

struct Top: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "A live view of the farm: jobs, workers, queue depth and throughput.",
        discussion: """
            On a terminal: a full-screen view refreshed every --interval seconds. Keys: q quits, \
            f cycles the job filter through the states, a shows all jobs again. It follows the \
            terminal's size. When stdout is not a terminal it prints plain lines each refresh \
            (a summary, then one line per unfinished job and per worker); --json prints one \
            snapshot object per line (the dashboard's /api/farm schema, see docs/json-output.md).
            """)

    @Option(name: .long, help: "Seconds between refreshes.") var interval: Double = 1
    @Option(name: .long, help: "Only jobs in this state (f cycles it on a terminal).") var state: String?
    @Option(name: .long, help: "Stop after this many refreshes (default: until q or Ctrl-C; on a pipe, forever).") var count: Int?
    @OptionGroup var client: ClientOptions

    func validate() throws {
        guard interval >= 0.1 else { throw ValidationError("--interval must be at least 0.1 seconds") }
        if let state, JobState(rawValue: state) == nil {
            throw ValidationError("unknown state '\(state)': \(JobState.allCases.map(\.rawValue).joined(separator: ", "))")
        }
    }

    func run() throws {
        let endpoint = client.endpoint()
        let c = try client.client()
        var renderer = TopRenderer(coordinator: endpoint, filter: state.flatMap(JobState.init(rawValue:)))
        var tracker = RateTracker()
        func fetch() throws -> FarmSnapshot {
            let jobs = try c.call(.jobs(JobsQuery(state: nil, limit: 200)), as: [JobView].self)
            let workers = try c.call(.workers, as: [WorkerView].self)
            return tracker.observe(FarmSnapshot(at: Date(), jobs: jobs, workers: workers))
        }

        guard Terminal.isInteractive && !client.json else {
            // Plain periodic lines (or JSON lines) for pipes and logs.
            var n = 0
            while count.map({ n < $0 }) ?? true {
                let s = try fetch()
                if client.json {
                    try printJSONLine(s)
                } else {
                    for line in renderer.plainLines(s) { print(line) }
                }
                fflush(nil)
                n += 1
                if count.map({ n < $0 }) ?? true { Thread.sleep(forTimeInterval: interval) }
            }
            return
        }

        let term = Terminal()
        term.enter()
        defer { term.leave() }
        var snapshot = try fetch()
        var lastFetch = Date()
        var refreshes = 1
        var error: String?
        func redraw() {
            var lines = renderer.render(snapshot, size: Terminal.size())
            if let error, lines.count > 1 { lines[lines.count - 2] = String("coordinator: \(error)".prefix(lines[0].count)) }
            term.draw(lines)
        }
        redraw()
        while !term.quitRequested {
            if let k = term.key(timeout: 0.1) {
                switch k {
                case UInt8(ascii: "q"), UInt8(ascii: "Q"), 3 /* Ctrl-C in raw mode */: return
                case UInt8(ascii: "f"): renderer.filter = TopRenderer.nextFilter(after: renderer.filter); redraw()
                case UInt8(ascii: "a"): renderer.filter = nil; redraw()
                default: break
                }
            }
            if term.resized { term.resized = false; term.write("\u{1B}[2J"); redraw() }
            if Date().timeIntervalSince(lastFetch) >= interval {
                lastFetch = Date()
                do {
                    snapshot = try fetch()
                    error = nil
                } catch let e as DubfarmError {
                    error = e.message
                }
                refreshes += 1
                redraw()
                if let count, refreshes >= count { return }
            }
        }
    }
}
