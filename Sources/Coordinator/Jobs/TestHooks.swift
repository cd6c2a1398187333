import Foundation
import Logging

/// Test-only pauses that make short steps long enough for a fault-injection test to hit them
/// (SIGKILL the coordinator *while* it plans or stitches).
///
/// They are read from the environment once, are off unless set, and log a line when they fire so
/// a test can wait on it instead of sleeping:
///
/// - `DUBFARM_TEST_PAUSE_PLANNING=SECONDS`: planning stops for that long after the packet index
///   is written and before the dub track is decoded (the plan is half made).
/// - `DUBFARM_TEST_PAUSE_STITCHING=SECONDS`: stitching stops for that long after the job was
///   marked `stitching` and before the output is written.
///
/// Never set them in production: they only slow the farm down.
enum TestHooks {
    static let planning = seconds("DUBFARM_TEST_PAUSE_PLANNING")
    static let stitching = seconds("DUBFARM_TEST_PAUSE_STITCHING")

    private static func seconds(_ name: String) -> Double? {
        guard let text = ProcessInfo.processInfo.environment[name], let s = Double(text), s > 0 else { return nil }
        return s
    }

    /// Blocks the calling (non-cooperative) thread for `seconds`, if set, after logging `step`.
    static func pause(_ seconds: Double?, _ step: String, logger: Logger) {
        guard let seconds else { return }
        logger.warning("test hook: pausing \(step) for \(seconds) s")
        usleep(UInt32(seconds * 1e6))
    }
}
