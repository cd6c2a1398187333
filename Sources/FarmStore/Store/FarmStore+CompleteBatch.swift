import DubfarmCore
import Foundation
import Postgres

extension FarmStore {
    /// One completion of ``completeSegments(_:leaseSeconds:)``: the result of lease `token`, and
    /// optionally the next claim for the worker that sent it.
    package struct CompletionRequest: Sendable {
        package var ref: SegmentRef
        package var token: LeaseToken
        package var resultBytes: Int64
        /// Where the result lies in its job's result log (nil: a file of its own).
        package var resultOffset: Int64?
        package var processSeconds: Double
        package var stats: SegmentStats?
        /// Lease this worker its next segment in the same round trip (after the commit).
        package var thenClaim: ClaimRequest?

        package init(ref: SegmentRef, token: LeaseToken, resultBytes: Int64, resultOffset: Int64? = nil, processSeconds: Double,
                    stats: SegmentStats? = nil, thenClaim: ClaimRequest? = nil) {
            self.ref = ref
            self.token = token
            self.resultBytes = resultBytes
            self.resultOffset = resultOffset
            self.processSeconds = processSeconds
            self.stats = stats
            self.thenClaim = thenClaim
        }
    }

    /// What one ``CompletionRequest`` came to: accepted (and whether its job is now all done)
    /// or rejected by the fencing rule, and the segment claimed for its worker, if any.
    package typealias CompletionReply = (completion: Result<CompletionOutcome, SegmentStateMachine.Rejection>,
                                        next: ClaimedSegment?)

    /// Several completions, and the claims chained to them, in one pipelined round trip and one
    /// commit (group commit): what the coordinator does with the results that arrived while the
    /// previous commit was in flight.
    ///
    /// Each completion follows the rules of
    /// ``completeSegment(_:token:resultBytes:processSeconds:stats:thenClaimFor:nextToken:leaseSeconds:stage:model:)``:
    /// the fencing check is the write's `WHERE` clause, and a stale token changes nothing. The
    /// jobs' rows are locked first, in id order (so two batches never deadlock), which serialises
    /// completions of a job as the single call does: its statements run one after another in
    /// this transaction, each seeing the ones before, so exactly one of them reports `allDone`.
    /// The claims run after the commit, in request order; a claim that fails is logged and
    /// gives `nil`, as in the single call.
    ///
    /// All or nothing for the completions: if the transaction fails, the error is thrown and
    /// nothing is recorded (the caller may complete the requests one by one to isolate a bad
    /// one). One reply per request, in order.
    package func completeSegments(_ requests: [CompletionRequest], leaseSeconds: Double) throws -> [CompletionReply] {
        guard !requests.isEmpty else { return [] }
        let c = try db()
        let jobs = Set(requests.map(\.ref.job.rawValue)).sorted()
        var statements = [PostgresStatement("BEGIN")]
        statements += jobs.map { PostgresStatement("SELECT state FROM jobs WHERE id = $1 FOR NO KEY UPDATE", [.int(Int($0))]) }
        let firstCompletion = statements.count
        for r in requests {
            let stats = try Self.statsParameter(r.stats)
            statements.append(PostgresStatement(Self.completeSQL, [
                .int(Int(r.ref.job.rawValue)), .int(r.ref.index), .int(Int(r.resultBytes)), .double(r.processSeconds),
                .text(r.token.description), stats, r.resultOffset.map { .int(Int($0)) },
            ]))
        }
        let commit = statements.count
        statements.append(PostgresStatement("COMMIT"))
        var claimAt: [Int?] = []
        for r in requests {
            if let claim = r.thenClaim {
                claimAt.append(statements.count)
                statements.append(PostgresStatement(Self.claimSQL, claimParams(worker: claim.worker, token: claim.token,
                                                                               leaseSeconds: leaseSeconds,
                                                                               stage: claim.stage, model: claim.model)))
            } else {
                claimAt.append(nil)
            }
        }
        do {
            let out = try c.pipelineOutcomes(statements)
            // Every statement up to the commit must have run and succeeded, or nothing was recorded.
            for k in 0...commit {
                guard let outcome = out[k] else {
                    throw DubfarmError(.internalError, "a batch of \(requests.count) completions was not run")
                }
                _ = try outcome.get()
            }
            var replies: [CompletionReply] = []
            replies.reserveCapacity(requests.count)
            for (i, r) in requests.enumerated() {
                let rows = try out[firstCompletion + i]!.get()
                var claimed: ClaimedSegment?
                if let at = claimAt[i], let claim = r.thenClaim {
                    switch out[at] {
                    case .success(let claimRows)?:
                        claimed = try claimRows.first.map { try decodeClaim($0, worker: claim.worker, token: claim.token) }
                    case .failure(let e)?:
                        logger.error("claim after a completion failed", metadata: ["segment": "\(r.ref)", "error": "\(e.message)"])
                    case nil:
                        break
                    }
                }
                if try rows[0]["accepted"].decode(Int.self) == 1 {
                    replies.append((.success(CompletionOutcome(allDone: try rows[0]["all_done"].decode(Bool.self))), claimed))
                } else {
                    replies.append((.failure(try rejection(of: r.ref, token: r.token)), claimed))
                }
            }
            return replies
        } catch {
            if c.isConnected && c.inTransaction { _ = try? c.query("ROLLBACK") }
            throw error
        }
    }

    /// Why a fenced completion of lease `token` matched no row, by the state machine's rules
    /// (the rare path: read the segment again).
    func rejection(of ref: SegmentRef, token: LeaseToken) throws -> SegmentStateMachine.Rejection {
        guard let rec = try segment(ref) else { throw DubfarmError(.notFound, "there is no segment \(ref)") }
        var m = rec.machine
        do throws(SegmentStateMachine.Rejection) {
            try m.complete(token: token)
        } catch {
            return error
        }
        // The machine would accept it now, but the write did not match: it was not current when
        // the write ran.
        return .staleToken(current: rec.lease)
    }
}
