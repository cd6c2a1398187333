import Testing
@testable import DubfarmCore

@Suite("Personalisation state machine")
struct PersonalisationMachineTests {
    @Test("preparing → pending → leased → done under the lease's token")
    func happyPath() throws {
        var m = PersonalisationMachine()
        let t = LeaseToken.random()
        #expect(throws: PersonalisationMachine.Rejection.wrongState(.preparing)) { try m.lease(token: t, to: "w1") }
        try m.prepared()
        try m.lease(token: t, to: "w1")
        #expect(m.state == .leased && m.leasedBy == "w1" && m.leases == 1)
        try m.checkpoint(token: t, step: 40)
        try m.complete(token: t)
        #expect(m.state == .done && m.lease == nil && m.checkpointStep == 40)
    }

    @Test("fencing: checkpoints, results and failures of a superseded lease change nothing")
    func fencing() throws {
        var m = PersonalisationMachine(state: .pending)
        let old = LeaseToken.random(), new = LeaseToken.random()
        try m.lease(token: old, to: "w1")
        try m.checkpoint(token: old, step: 10)
        try m.release(token: nil)            // w1 lost: no failure counted, the checkpoint kept
        #expect(m.state == .pending && m.failures == 0 && m.checkpointStep == 10)
        try m.lease(token: new, to: "w2")
        let before = m
        #expect(throws: PersonalisationMachine.Rejection.staleToken(current: new)) { try m.checkpoint(token: old, step: 99) }
        #expect(throws: PersonalisationMachine.Rejection.staleToken(current: new)) { try m.complete(token: old) }
        #expect(throws: PersonalisationMachine.Rejection.staleToken(current: new)) { try m.fail(token: old, maxAttempts: 3) }
        #expect(m == before)
        #expect(m.leases == 2)
    }

    @Test("a checkpoint older than the kept one is refused")
    func olderCheckpoint() throws {
        var m = PersonalisationMachine(state: .pending)
        let t = LeaseToken.random()
        try m.lease(token: t, to: "w1")
        try m.checkpoint(token: t, step: 30)
        #expect(throws: PersonalisationMachine.Rejection.olderCheckpoint(kept: 30, offered: 20)) { try m.checkpoint(token: t, step: 20) }
        #expect(m.checkpointStep == 30)
    }

    @Test("failed attempts retry, then the job fails, or runs on the default weights when it asked to")
    func failures() throws {
        for fallback in [false, true] {
            var m = PersonalisationMachine(state: .pending, fallback: fallback)
            var outcomes: [PersonalisationMachine.FailureOutcome] = []
            for _ in 0..<3 {
                let t = LeaseToken.random()
                try m.lease(token: t, to: "w")
                outcomes.append(try m.fail(token: t, maxAttempts: 3))
            }
            #expect(outcomes == [.retry, .retry, fallback ? .fallBackToDefaultWeights : .failJob])
            #expect(m.state == .failed && m.failures == 3)
        }
    }

    @Test("unusable footage ends it at once")
    func permanent() throws {
        var m = PersonalisationMachine(state: .pending)
        let t = LeaseToken.random()
        try m.lease(token: t, to: "w")
        #expect(try m.fail(token: t, maxAttempts: 3, permanent: true) == .failJob)
        var p = PersonalisationMachine(fallback: true)
        #expect(p.giveUp() == .fallBackToDefaultWeights && p.state == .failed)
    }

    @Test("the job's options carry the request; 0 means none; nonsense is refused")
    func request() throws {
        var options: [String: String] = [:]
        PersonaliseRequest(seconds: 120, fallback: true).store(in: &options)
        #expect(try PersonaliseRequest(options: options) == PersonaliseRequest(seconds: 120, fallback: true))
        #expect(try PersonaliseRequest(options: [:]) == nil)
        #expect(try PersonaliseRequest(options: ["personalise": "0"]) == nil)
        #expect(throws: DubfarmError.self) { try PersonaliseRequest(options: ["personalise": "-5"]) }
        #expect(throws: DubfarmError.self) { try PersonaliseRequest(options: ["personalise": "soon"]) }
    }

    @Test("jobs go planning → personalising → running")
    func jobStates() {
        #expect(JobState.planning.canTransition(to: .personalising))
        #expect(JobState.personalising.canTransition(to: .running))
        #expect(JobState.personalising.canTransition(to: .failed) && JobState.personalising.canTransition(to: .cancelled))
        #expect(!JobState.personalising.canTransition(to: .stitching) && !JobState.queued.canTransition(to: .personalising))
    }
}
