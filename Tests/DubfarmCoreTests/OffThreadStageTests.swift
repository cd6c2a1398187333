import DubfarmCore
import Foundation
import Synchronization
import Testing
#if canImport(Glibc)
import Glibc
#endif

@Suite("Off-thread pipeline stage")
struct OffThreadStageTests {
    struct Boom: Error, Equatable { let at: Int }

    /// Counters shared between the test and a stage's thread.
    final class Probe: Sendable {
        let processed = Atomic<Int>(0)
        let offThread = Atomic<Int>(0)
        let stateReleased = Atomic<Bool>(false)
        let caller = pthread_self()
    }

    /// State that lives on the stage's thread; records when it is released.
    final class State {
        let probe: Probe
        var seen: [Int] = []
        init(_ probe: Probe) { self.probe = probe }
        deinit { probe.stateReleased.store(true, ordering: .relaxed) }
    }

    static func doubling(_ probe: Probe, failAt: Int? = nil, delay: Duration = .zero) -> OffThreadStage<Int, Int>.Step {
        let state = State(probe)
        return .init(process: { x in
            if pthread_equal(pthread_self(), probe.caller) == 0 { probe.offThread.add(1, ordering: .relaxed) }
            if x == failAt { throw Boom(at: x) }
            if delay > .zero { Thread.sleep(forTimeInterval: delay.seconds) }
            state.seen.append(x)
            probe.processed.add(1, ordering: .relaxed)
            return [2 * x, 2 * x + 1]
        }, finish: { [-state.seen.count] })
    }

    @Test("every input in order, the finish's outputs last; on a thread of its own, or inline on the caller's", arguments: [false, true])
    func orderAndFinish(inline: Bool) throws {
        let probe = Probe()
        let stage = try OffThreadStage<Int, Int>(name: "test", capacity: 3, inline: inline) { Self.doubling(probe) }
        var out: [Int] = []
        for i in 0..<200 {
            try stage.put(i)
            out += try stage.takeAvailable()
        }
        out += try stage.finish()
        let offThread = probe.offThread.load(ordering: .relaxed), released = probe.stateReleased.load(ordering: .relaxed)
        #expect(out == (0..<400).map { $0 } + [-200])
        #expect(offThread == (inline ? 0 : 200))
        #expect(released, "the step's state is released by the time finish returns")
    }

    @Test("put blocks once `capacity` inputs wait: the stage is never more than capacity + 1 inputs behind")
    func backpressure() throws {
        let probe = Probe()
        let stage = try OffThreadStage<Int, Int>(name: "test", capacity: 2) { Self.doubling(probe, delay: .milliseconds(2)) }
        var maxBehind = 0
        for i in 0..<40 {
            try stage.put(i)
            maxBehind = max(maxBehind, i + 1 - probe.processed.load(ordering: .relaxed))
            _ = try stage.takeAvailable()
        }
        _ = try stage.finish()
        #expect(maxBehind <= 3, "\(maxBehind) inputs behind")
        #expect(maxBehind >= 2, "a slow step lets inputs queue up to the capacity")
    }

    @Test("an error of the step reaches the owner at its next call; the thread ends and its state is released", arguments: [false, true])
    func errorsReachTheOwner(inline: Bool) throws {
        let probe = Probe()
        let stage = try OffThreadStage<Int, Int>(name: "test", capacity: 2, inline: inline) { Self.doubling(probe, failAt: 5) }
        var thrown: Boom?
        do {
            for i in 0..<100 {
                try stage.put(i)
                _ = try stage.takeAvailable()
            }
            _ = try stage.finish()
        } catch let e as Boom {
            thrown = e
        }
        #expect(thrown == Boom(at: 5))
        stage.cancel()
        let processed = probe.processed.load(ordering: .relaxed), released = probe.stateReleased.load(ordering: .relaxed)
        #expect(processed == 5)
        #expect(released)
    }

    @Test("an error while building the step is thrown by the first call after it")
    func makeFails() throws {
        let stage = try OffThreadStage<Int, Int>(name: "test") { throw Boom(at: -1) }
        #expect(throws: Boom(at: -1)) { _ = try stage.finish() }
        #expect(throws: Boom(at: -1)) { try stage.put(1) }
    }

    @Test("cancel drops the waiting inputs, waits for the thread, and releases the step's state; put then refuses")
    func cancelStops() throws {
        let probe = Probe()
        let stage = try OffThreadStage<Int, Int>(name: "test", capacity: 8) { Self.doubling(probe, delay: .milliseconds(20)) }
        for i in 0..<8 { try stage.put(i) }
        stage.cancel()
        let processed = probe.processed.load(ordering: .relaxed), released = probe.stateReleased.load(ordering: .relaxed)
        #expect(processed < 8, "waiting inputs are dropped (\(processed) processed)")
        #expect(released)
        #expect(throws: OffThreadStage<Int, Int>.Cancelled.self) { try stage.put(9) }
        stage.cancel()
        let after = probe.processed.load(ordering: .relaxed)
        #expect(after == processed)
    }
}
