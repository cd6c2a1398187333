import ArgumentParser
import DubfarmCore
import Foundation

@main
struct Dubfarm: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dubfarm",
        abstract: "A distributed batch render farm for video dubbing.",
        discussion: """
            Quick start:  dubfarm local up            (a private farm on this machine)
                          dubfarm submit talk.mp4 --audio dub.wav --wait --out dubbed.mp4

            A coordinator cuts each video into 10-second segments, keeps all state in PostgreSQL and \
            hands segments to workers over ZeroMQ; workers may run on any number of machines \
            (`dubfarm worker --connect tcp://COORDINATOR:5555`).

            Exit codes: 0 success · 1 the job failed or was cancelled · 2 usage or input error · \
            3 coordinator (or database) unreachable · 4 a file on this machine could not be read or \
            written (an upload, or a download's --out).
            """,
        version: DubfarmVersion.current,
        // Grouped by who runs them: whoever dubs videos, whoever runs the farm, whoever works on the model.
        groupedSubcommands: [
            CommandGroup(name: "User", subcommands: [
                Submit.self, Wait.self, Status.self, Jobs.self, Logs.self, Top.self, Cancel.self, Retry.self, SetPriority.self, Fetch.self,
                Probe.self,
            ]),
            CommandGroup(name: "Operator", subcommands: [
                LocalCommand.self, CoordinatorCommand.self, WorkerCommand.self, Workers.self, GC.self, Migrate.self, ConfigCommand.self,
                KeysCommand.self,
            ]),
            CommandGroup(name: "Developer", subcommands: [ModelCommand.self, DatasetCommand.self, BenchCommand.self]),
        ]
    )

    /// Parses, runs, and maps failures to the documented exit codes.
    static func main() async {
        do {
            var command = try parseAsRoot(Submit.expandingPersonalise(Array(CommandLine.arguments.dropFirst())))
            if var async = command as? AsyncParsableCommand {
                try await async.run()
            } else {
                try command.run()
            }
        } catch let e as DubfarmError {
            FileHandle.standardError.write(Data("dubfarm: \(e.message)\n".utf8))
            Foundation.exit(ExitStatus.for(e))
        } catch let e as JobEnded {
            FileHandle.standardError.write(Data("dubfarm: \(e.message)\n".utf8))
            Foundation.exit(1)
        } catch {
            let code = exitCode(for: error)
            if code == .success {
                exit(withError: error)
            }
            let message = fullMessage(for: error)
            if !message.isEmpty { FileHandle.standardError.write(Data((message + "\n").utf8)) }
            // ArgumentParser reports usage errors as 64; dubfarm documents 2.
            Foundation.exit(code == .validationFailure ? 2 : code.rawValue == 64 ? 2 : code.rawValue)
        }
    }
}

/// The documented exit codes.
enum ExitStatus {
    static let success: Int32 = 0
    static let jobFailed: Int32 = 1
    static let usage: Int32 = 2
    static let unreachable: Int32 = 3
    static let localFile: Int32 = 4

    static func `for`(_ e: DubfarmError) -> Int32 {
        switch e.code {
        case .unreachable, .timeout: return unreachable
        case .localFile: return localFile
        case .badInput, .unsupported, .notFound, .configuration, .schemaTooNew: return usage
        case .cancelled, .stitch: return jobFailed
        default: return jobFailed
        }
    }
}

/// A job that ended in `failed` or `cancelled` while the CLI waited for it (exit code 1).
struct JobEnded: Error {
    let message: String
}
