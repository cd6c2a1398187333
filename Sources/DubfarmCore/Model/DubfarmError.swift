/// An error a user can act on: what failed, why, and a machine-readable ``Code``.
///
/// Modelled on swift-service-lifecycle's error struct: a closed set of codes for programs,
/// a message in plain words for people.
package struct DubfarmError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What kind of failure this is. Codes map to CLI exit codes.
    package struct Code: Sendable, Hashable, CustomStringConvertible {
        enum Base: String, Sendable, Hashable {
            case badInput, unsupported, notFound, io, database, protocolViolation, unreachable
            case configuration, stitch, cancelled, internalError, schemaTooNew, diskFull, timeout
            case localFile
        }
        let base: Base
        init(_ base: Base) { self.base = base }
        package var description: String { base.rawValue }

        /// Whether a segment that failed this way would fail the same way on any worker and at
        /// any later time (the input is unusable), so retrying it only delays the job's failure.
        package var isPermanent: Bool { self == .badInput }

        /// The input (a media file, a request) is unusable; the user must change it.
        package static let badInput = Code(.badInput)
        /// The input is valid but uses something dubfarm does not support.
        package static let unsupported = Code(.unsupported)
        /// A job, segment, file or worker does not exist.
        package static let notFound = Code(.notFound)
        /// Reading or writing a file failed.
        package static let io = Code(.io)
        /// A file on the CLI's own machine (an upload being read, a download being written) could not
        /// be read or written: the user's disk or path, not the farm (exit code 4).
        package static let localFile = Code(.localFile)
        /// The disk or filesystem is full.
        package static let diskFull = Code(.diskFull)
        /// PostgreSQL refused or failed a statement.
        package static let database = Code(.database)
        /// The database schema is newer than this build understands.
        package static let schemaTooNew = Code(.schemaTooNew)
        /// A peer sent a message that breaks the wire protocol.
        package static let protocolViolation = Code(.protocolViolation)
        /// A peer (coordinator, database) cannot be reached.
        package static let unreachable = Code(.unreachable)
        /// The configuration is invalid.
        package static let configuration = Code(.configuration)
        /// Stitching the segments into the output failed its checks.
        package static let stitch = Code(.stitch)
        /// The work was cancelled.
        package static let cancelled = Code(.cancelled)
        /// An operation took longer than allowed.
        package static let timeout = Code(.timeout)
        /// A bug: an invariant did not hold.
        package static let internalError = Code(.internalError)

        /// Parses the textual form used on the wire and in the database.
        package init?(rawValue: String) {
            guard let b = Base(rawValue: rawValue) else { return nil }
            self.base = b
        }
        package var rawValue: String { base.rawValue }
    }

    package let code: Code
    /// A complete sentence naming what failed and why.
    package let message: String

    package init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    package var description: String { message }
}

/// The last path component of `path`, as error messages name a file (the user knows their file
/// by name). The FFmpeg module, which does not depend on DubfarmCore, keeps its own.
package func fileName(_ path: String) -> String {
    path.split(separator: "/").last.map(String.init) ?? path
}
