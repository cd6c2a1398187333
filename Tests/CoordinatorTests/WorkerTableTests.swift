import DubfarmCore
import FarmProtocol
import FarmStore
import Testing
@testable import Coordinator

@Suite("Coordinator worker table: registration, claiming, tasks, fine-tunes, persisted states")
struct WorkerTableTests {
    let now = ContinuousClock.now
    func hello(_ name: String, busyWith: TaskRef? = nil) -> WorkerHello {
        WorkerHello(name: name, host: "h", pid: 1, threads: 2, stage: "passthrough", version: "test", busyWith: busyWith)
    }
    func task(_ job: Int64, _ index: Int) -> TaskRef {
        TaskRef(segment: SegmentRef(job: JobID(job), index: index), token: .random())
    }
    /// A table with the given workers connected and stored, idle.
    func table(_ names: String...) -> WorkerTable {
        var t = WorkerTable()
        for n in names { t.store(t.connect(Array(n.utf8), hello(n), now: now).peer) }
        return t
    }

    @Test("a READY from a known identity keeps its counters, task and weights; another identity under the same name is replaced")
    func connectMerges() {
        var t = table("w1", "w2")
        let a = Array("w1".utf8)
        let ref = task(1, 0)
        t.taskSent(a, ref, frames: 250, at: now)
        let finished = t.finish(a, ref, frames: 250)
        #expect(finished)
        let newWeights = t.weightsSent(a, "abc")
        #expect(newWeights)
        let again = t.connect(a, hello("w1"), now: now + .seconds(5))
        #expect(again.existing != nil && again.replaced.isEmpty)
        #expect(again.peer.segmentsDone == 1 && again.peer.totalFrames == 250 && again.peer.weightsSent == ["abc"])
        // w2 restarted as a new process (new identity, same name): the old entry goes.
        let restarted = t.connect(Array("w2-new".utf8), hello("w2"), now: now)
        #expect(restarted.existing == nil && restarted.replaced.map(\.hello.name) == ["w2"])
        #expect(t[Array("w2".utf8)] == nil)
        t.store(restarted.peer)
        #expect(t.identity(of: "w2") == Array("w2-new".utf8))
    }

    @Test("one claim at a time per idle worker; a busy or unknown worker cannot be claimed for")
    func claiming() {
        var t = table("w1", "w2")
        let a = Array("w1".utf8), b = Array("w2".utf8)
        #expect(Set(t.idleUnclaimed()) == [a, b])
        let claimed = t.beginClaim(a)
        #expect(claimed)
        let claimedTwice = t.beginClaim(a)
        #expect(!claimedTwice)
        #expect(t.idleUnclaimed() == [b])
        t.endClaim(a)
        t.taskSent(a, task(1, 0), frames: 10, at: now)
        let claimedBusy = t.beginClaim(a)
        #expect(!claimedBusy)
        let claimedUnknown = t.beginClaim(Array("nobody".utf8))
        #expect(!claimedUnknown)
        t.beginClaim(all: [b])
        #expect(t.idleUnclaimed().isEmpty)
        t.endClaim(all: [b])
        #expect(t.idleUnclaimed() == [b])
    }

    @Test("a task is finished only by its own lease; progress and views follow it")
    func tasks() {
        var t = table("w1")
        let a = Array("w1".utf8)
        let ref = task(3, 2)
        t.taskSent(a, ref, frames: 100, at: now)
        t.progress(a, framesDone: 40)
        #expect(t.inFlight() == [ref.segment: 40])
        #expect(t.holders(of: ref).map(\.hello.name) == ["w1"])
        #expect(t.busyCount == 1)
        #expect(t.views(now: now, draining: false).map { "\($0.state) \($0.current ?? "-") \($0.framesDone)" } == ["busy 3/2 40"])
        let otherLease = t.finish(a, task(3, 2), frames: 100)   // same segment, another lease
        #expect(!otherLease)
        let finished = t.finish(a, ref, frames: 100)
        #expect(finished)
        let finishedTwice = t.finish(a, ref, frames: 100)
        #expect(!finishedTwice)
        #expect(t.busyCount == 0 && t.inFlight().isEmpty)
        #expect(t.views(now: now, draining: true).map { "\($0.state) \($0.segmentsDone) \($0.framesDone)" } == ["draining 1 100"])
    }

    @Test("fine-tunes: ranks, gang members, resumption only when idle, finish returns the rank")
    func training() {
        var t = table("w1", "w2", "w3")
        let (a, b, c) = (Array("w1".utf8), Array("w2".utf8), Array("w3".utf8))
        let ref = TrainRef(job: JobID(7), token: .random())
        t.trainingSent(a, ref, rank: 0, at: now)
        t.trainingSent(b, ref, rank: 1, at: now)
        #expect(t.gangMembers(of: JobID(7)).map(\.hello.name) == ["w2"])
        #expect(t.views(now: now, draining: false).first { $0.name == "w1" }?.current == "7/personalise")
        let other = task(1, 0)
        t.taskSent(c, other, frames: 5, at: now)
        t.trainingResumed(c, ref)   // busy with a segment: not taken as training
        #expect(t[c]?.training == nil)
        let wrongLease = t.finishTraining(a, TrainRef(job: JobID(7), token: .random()))
        #expect(wrongLease == nil)
        let memberRank = t.finishTraining(b, ref)
        #expect(memberRank == 1)
        let holderRank = t.finishTraining(a, ref)
        #expect(holderRank == 0)
        #expect(t[a]?.isIdle == true && t[b]?.isIdle == true)
    }

    @Test("only changed worker states are written, and a write is remembered")
    func persistedStates() {
        var t = table("w1", "w2")
        let first = t.stateChanges(draining: false)
        #expect(Set(first.map(\.name)) == ["w1", "w2"] && first.allSatisfy { $0.state == .idle })
        t.persisted(first)
        #expect(t.stateChanges(draining: false).isEmpty)
        let ref = task(1, 4)
        t.taskSent(Array("w1".utf8), ref, frames: 1, at: now)
        #expect(t.stateChanges(draining: false) == [.init(name: "w1", state: .busy, segment: ref.segment)])
        #expect(Set(t.stateChanges(draining: true).map(\.name)) == ["w1", "w2"])   // w2 idle → draining
        let removed = t.remove(Array("w1".utf8))
        #expect(removed?.hello.name == "w1")
        #expect(t.stateChanges(draining: false).isEmpty)
    }

    @Test("a worker that sent a partial result is stopping: it is never claimed for again and shows as draining")
    func stoppingWorkerGetsNoWork() {
        var t = table("w1", "w2")
        let a = Array("w1".utf8)
        let ref = task(1, 0)
        t.taskSent(a, ref, frames: 250, at: now)
        t.markStopping(a)
        let finished = t.finish(a, ref, frames: 40)
        #expect(finished)
        #expect(t.idleUnclaimed() == [Array("w2".utf8)])
        let claimed = t.beginClaim(a)
        #expect(!claimed)
        #expect(t.stateChanges(draining: false).first { $0.name == "w1" }?.state == .draining)
        #expect(t.stateChanges(draining: false).first { $0.name == "w2" }?.state == .idle)
    }
}
