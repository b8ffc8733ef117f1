import ElasticCore
import ElasticWire
import ElasticTestSupport
import Foundation
import Testing

// MARK: - Seeded randomness

/// Test helpers on ElasticCore's SplitMix64 (W1's generator).
extension SplitMix64 {
    /// A cheap integer in 0..<bound (bound > 0); the modulo bias is irrelevant here.
    mutating func below(_ bound: Int) -> Int { Int(next() % UInt64(bound)) }

    mutating func byte() -> UInt8 { UInt8(truncatingIfNeeded: next()) }
}


// MARK: - Helpers

/// Runs `body` and checks that it throws a WireError with `code`; returns the error.
@discardableResult
func expectWireError<T>(
    _ code: WireError.Code, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws(WireError) -> T
) -> WireError? {
    do {
        let value = try body()
        Issue.record("expected \(code), got \(value)\(comment.map { " — \($0)" } ?? "")", sourceLocation: sourceLocation)
        return nil
    } catch {
        #expect(error.code == code, "\(error)\(comment.map { " — \($0)" } ?? "")", sourceLocation: sourceLocation)
        #expect(!error.message.isEmpty, sourceLocation: sourceLocation)
        return error
    }
}

/// Feeds `bytes` to a fresh decoder in one piece and pulls every frame.
func decodeFrames(_ bytes: [UInt8], maximumFrameSize: Int = Frame.defaultMaximumSize) throws(WireError) -> [Frame] {
    var decoder = FrameDecoder(maximumFrameSize: maximumFrameSize)
    decoder.append(bytes)
    var frames: [Frame] = []
    while let frame = try decoder.next() { frames.append(frame) }
    return frames
}

/// A frame with a hand-written payload.
func frame(_ kind: ControlMessage.Kind, _ payload: [UInt8], generation: Generation = 5) -> Frame {
    Frame(kind: kind.rawValue, generation: generation, payload: payload)
}

/// A data-plane frame with a hand-written payload.
func dataFrame(_ kind: DataMessage.Kind, _ payload: [UInt8], generation: Generation = 5) -> Frame {
    Frame(kind: kind.rawValue, generation: generation, payload: payload)
}

/// The bytes of a float32, least significant first (the data plane's order).
func littleEndianBytes(_ value: Float) -> [UInt8] {
    let bits = value.bitPattern
    return (0..<4).map { UInt8(truncatingIfNeeded: bits >> (8 * UInt32($0))) }
}

/// Builds a payload field by field.
func payload(_ build: (inout WireWriter) -> Void) -> [UInt8] {
    var writer = WireWriter()
    build(&writer)
    return writer.bytes
}

// MARK: - Sample messages

/// At least one message of every kind, with awkward values: empty and non-empty lists, absent and
/// present optionals, extreme integers, non-ASCII text.
enum Samples {
    static let capacity = Capacity(cores: 96, memoryBytes: 768 << 30, gflops: 4_321.125)

    static let tokenInfos: [TokenInfo] = [
        TokenInfo(id: "abc123", createdAt: 1_700_000_000, expiresAt: 1_700_086_400, usesLeft: 3, uses: 2, description: "ci runners"),
        TokenInfo(id: "def456", createdAt: -1, expiresAt: nil, usesLeft: nil, uses: 0, description: ""),
        TokenInfo(id: "ghi789", createdAt: .max, expiresAt: .min, usesLeft: 0, uses: .max, description: "rack 4 — nœud"),
    ]

    static let memberStatuses: [MemberStatus] = [
        MemberStatus(node: "w1", incarnation: 3, address: "10.0.0.1:7070", state: .alive, sinceGeneration: 3,
                     lastHeardAge: .milliseconds(120), capacity: capacity, note: ""),
        MemberStatus(node: "w2", incarnation: 4, address: "[fe80::1%eth0]:7070", state: .suspect, sinceGeneration: 4,
                     lastHeardAge: .milliseconds(1_500), capacity: Capacity(cores: 1, memoryBytes: 0, gflops: 0), note: "missed heartbeats"),
        MemberStatus(node: "w3", incarnation: 1, address: "", state: .dead, sinceGeneration: 5,
                     lastHeardAge: .seconds(86_400), capacity: capacity, note: "no heartbeat within the dead timeout"),
        MemberStatus(node: "w4", incarnation: 2, address: "h:1", state: .left, sinceGeneration: 6,
                     lastHeardAge: .zero, capacity: Capacity(cores: .max, memoryBytes: .max, gflops: .greatestFiniteMagnitude), note: "left the cluster"),
    ]

    /// 2 stages × 2 replicas over 5 layers, two spares; `nodes[stage][replica]`.
    static let plan = Plan(
        generation: 17, stages: [0..<3, 3..<5], replicas: 2,
        nodes: [["w1", "w3"], ["w2", "w4"]], spares: ["w5", "spare-ü"])

    /// Data addresses of exactly the plan's slot nodes (spares' addresses do not travel), one
    /// of them empty (a worker without a data-plane listener).
    static let dataAddresses: [NodeID: String] = [
        "w1": "10.0.0.1:7071", "w2": "[fe80::1%eth0]:7071", "w3": "hôte-é:65535", "w4": "",
    ]

    /// Two copies in the 2×2 plan, each between the slot nodes of the two replicas of one stage
    /// (a surviving holder to a newcomer), as `Planner.transfers` makes them.
    static let transfers: [StateTransfer] = [
        StateTransfer(stage: 0, from: "w1", to: "w3"),
        StateTransfer(stage: 1, from: "w4", to: "w2"),
    ]

    static let assignments: [Assignment] = [
        Assignment(plan: plan, dataAddresses: dataAddresses,
                   jobJSON: Array(#"{"name":"mnist-mlp","batch":64,"steps":100,"plan":{"stages":2,"replicas":2}}"#.utf8),
                   nextStep: 42, transfers: transfers),
        // The same plan with nothing to copy (a first generation, or nobody new).
        Assignment(plan: plan, dataAddresses: dataAddresses, jobJSON: [0x7B, 0x7D], nextStep: 0, transfers: []),
        // The smallest plan: one slot, no spares, no job bytes, extreme numbers.
        Assignment(plan: Plan(generation: Generation(.max), stages: [0..<1], replicas: 1, nodes: [["solo"]], spares: []),
                   dataAddresses: ["solo": "127.0.0.1:1"], jobJSON: [], nextStep: .max),
        // One stage, many replicas (the planner's default shape), layer bounds near UInt32.max.
        Assignment(plan: Plan(generation: 0, stages: [0..<Int(UInt32.max)], replicas: 3, nodes: [["r0", "r1", "r2"]], spares: ["s"]),
                   dataAddresses: ["r0": "a:1", "r1": "b:2", "r2": "c:3"], jobJSON: [0x7B, 0x7D], nextStep: 0),
        // One holder feeding two newcomers, and the last stage of a three-stage plan (a u32 stage
        // above 0, non-ASCII node ids).
        Assignment(plan: Plan(generation: 8, stages: [0..<1], replicas: 3, nodes: [["r0", "r1", "r2"]], spares: []),
                   dataAddresses: ["r0": "a:1", "r1": "b:2", "r2": "c:3"], jobJSON: [], nextStep: 7,
                   transfers: [StateTransfer(stage: 0, from: "r2", to: "r0"), StateTransfer(stage: 0, from: "r2", to: "r1")]),
        Assignment(plan: Plan(generation: 9, stages: [0..<2, 2..<4, 4..<5], replicas: 2,
                              nodes: [["a", "b"], ["c", "d"], ["nœud-ü", "é"]], spares: ["s1"]),
                   dataAddresses: ["a": "a:1", "b": "b:1", "c": "c:1", "d": "d:1", "nœud-ü": "e:1", "é": "f:1"],
                   jobJSON: [0x7B, 0x7D], nextStep: .max,
                   transfers: [StateTransfer(stage: 2, from: "é", to: "nœud-ü")]),
    ]

    static let trainingStatuses: [TrainingStatus] = [
        TrainingStatus(
            job: "mnist-mlp", phase: "training", detail: "step 42 of 100 — 2×2 plan", committedSteps: 42, totalSteps: 100,
            lastLoss: 0.693_147_180_559_945_3, samplesPerSecond: 12_345.75, plan: plan.summary,
            recent: [
                TrainingStatus.Entry(step: 40, epoch: 0, nextSample: 2_624, loss: 0.75, replicasAgree: true),
                TrainingStatus.Entry(step: 41, epoch: 1, nextSample: 0, loss: -0.0, replicasAgree: true),
                TrainingStatus.Entry(step: 42, epoch: .max, nextSample: .max, loss: .infinity, replicasAgree: false),
            ],
            traffic: [TrainingStatus.Traffic(node: "w1", bytesSent: 1_024, bytesReceived: 2_048, uncompressedBytes: 4_096)],
            grid: TrainingStatus.Grid(plan), batch: 256),
        TrainingStatus(job: "", phase: "", detail: "", committedSteps: 0, totalSteps: 0, lastLoss: -.greatestFiniteMagnitude,
                       samplesPerSecond: 0, plan: "", recent: []),
        // One stage of one replica, no spares, layer bounds near UInt32.max, the largest batch.
        TrainingStatus(job: "j", phase: "training", detail: "", committedSteps: 1, totalSteps: 2, lastLoss: 0.5,
                       samplesPerSecond: 1, plan: "", recent: [],
                       grid: TrainingStatus.Grid(generation: .max, stages: [.init(firstLayer: 0, endLayer: .max, nodes: ["nœud-ü"])], spares: []),
                       batch: .max),
        // Checkpoints failing on a full disk, and a job with no valid checkpoint yet.
        TrainingStatus(job: "j", phase: "running", detail: "", committedSteps: 60, totalSteps: 100, lastLoss: 1,
                       samplesPerSecond: 1, plan: "", recent: [], batch: 256,
                       checkpoints: .init(newestStep: 20, newestAgeMilliseconds: 41_250, consecutiveFailures: 2, failures: 3,
                                          lastFailure: .init(step: 60, reason: "w2 could not write stage 1: no space left on device"))),
        TrainingStatus(job: "j", phase: "running", detail: "", committedSteps: 0, totalSteps: .max, lastLoss: 0,
                       samplesPerSecond: 0, plan: "", recent: [], batch: 1,
                       checkpoints: .init(newestStep: nil, newestAgeMilliseconds: nil, consecutiveFailures: .max, failures: .max, lastFailure: nil)),
    ]

    static let stepReports: [StepReport] = [
        StepReport(step: 42, lossSum: 44.362_5, samples: 64, stateChecksum: 0xC0FF_EE00_DEAD_BEEF, computeTime: .milliseconds(1_234)),
        StepReport(step: .max, lossSum: -.greatestFiniteMagnitude, samples: .max, stateChecksum: 0, computeTime: .milliseconds(Int64.max / 1_000_000)),
        StepReport(step: 0, lossSum: 0, samples: 0, stateChecksum: .max, computeTime: .zero),
    ]

    static let all: [ControlMessage] = [
        .hello(Hello(resuming: nil, capacity: capacity, softwareVersion: "0.1.0")),
        .hello(Hello(resuming: Generation(0xDEAD_BEEF_0000_0001), capacity: Capacity(cores: 0, memoryBytes: .max, gflops: 0), softwareVersion: "")),
        .hello(Hello(resuming: 3, capacity: capacity, softwareVersion: "0.2.0", dataAddress: "[fe80::1%eth0]:7071")),
        .hello(Hello(resuming: nil, capacity: capacity, softwareVersion: "0.2.0", dataAddress: "hôte-é:65535")),
        .welcome(Welcome(node: "worker-7", incarnation: 42, heartbeatInterval: .milliseconds(500), deadTimeout: .seconds(2))),
        .welcome(Welcome(node: "", incarnation: Generation(.max), heartbeatInterval: .milliseconds(1), deadTimeout: .zero)),
        .heartbeat(incarnation: 7),
        .heartbeat(incarnation: Generation(.max)),
        .heartbeatAck,
        .view(View(members: [])),
        .view(View(members: [
            View.Entry(node: "w1", incarnation: 1, address: "10.0.0.1:7070"),
            View.Entry(node: "w2", incarnation: 9, address: "[::1]:7071"),
            View.Entry(node: "ünïcödé", incarnation: 12, address: "hôte-é:1"),
        ])),
        .leave(incarnation: 9),
        .leave(incarnation: .zero),
        .caRequest,
        .caBundle(certificateDER: []),
        .caBundle(certificateDER: (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 37) }),
        .bootstrapRequest(BootstrapRequest(token: "abc123.0123456789abcdef", name: "worker-7", csrDER: [0x30, 0x82, 0x01, 0x0A, 0x00, 0xFF])),
        .bootstrapRequest(BootstrapRequest(token: "", name: "", csrDER: [])),
        .bootstrapGranted(BootstrapGranted(node: "worker-7", certificateDER: [0x30, 0x03, 0x02, 0x01, 0x01], caDER: [0x30, 0x00])),
        .bootstrapGranted(BootstrapGranted(node: "n", certificateDER: [], caDER: [])),
        .statusRequest,
        .statusReply(ClusterStatus(generation: 0, uptime: .zero, heartbeatInterval: .milliseconds(500), deadTimeout: .seconds(2), members: [])),
        .statusReply(ClusterStatus(generation: 6, uptime: .seconds(3_600 * 24 * 365), heartbeatInterval: .milliseconds(250),
                                   deadTimeout: .milliseconds(1_750), members: memberStatuses)),
        .statusReply(ClusterStatus(generation: 17, uptime: .seconds(90), heartbeatInterval: .milliseconds(500),
                                   deadTimeout: .seconds(2), members: memberStatuses, training: trainingStatuses[0])),
        .statusReply(ClusterStatus(generation: 1, uptime: .zero, heartbeatInterval: .milliseconds(1),
                                   deadTimeout: .zero, members: [], training: trainingStatuses[1])),
        .statusReply(ClusterStatus(generation: 2, uptime: .zero, heartbeatInterval: .milliseconds(1),
                                   deadTimeout: .zero, members: [], training: trainingStatuses[2])),
        .statusReply(ClusterStatus(generation: 3, uptime: .seconds(60), heartbeatInterval: .milliseconds(500),
                                   deadTimeout: .seconds(2), members: memberStatuses, training: trainingStatuses[3])),
        .statusReply(ClusterStatus(generation: 4, uptime: .zero, heartbeatInterval: .milliseconds(1),
                                   deadTimeout: .zero, members: [], training: trainingStatuses[4])),
        .tokenCreate(TokenCreate(ttl: nil, uses: nil, description: "")),
        .tokenCreate(TokenCreate(ttl: .seconds(3_600), uses: 5, description: "ci runners")),
        .tokenCreate(TokenCreate(ttl: .zero, uses: 0, description: "zero")),
        .tokenCreated(TokenCreated(token: "abc123.0123456789abcdef", expiresAt: nil)),
        .tokenCreated(TokenCreated(token: "abc123.0123456789abcdef", expiresAt: 1_700_086_400)),
        .tokenCreated(TokenCreated(token: "x", expiresAt: -5)),
        .tokenListRequest,
        .tokenList([]),
        .tokenList(tokenInfos),
        .tokenRevoke(id: "abc123"),
        .tokenRevoke(id: ""),
        .nodeRevoke(node: "worker-3"),
        .nodeRevoke(node: ""),
        .done(message: "token abc123 revoked ✓"),
        .done(message: ""),
        .ready,
        .startStep(step: 0),
        .startStep(step: 43),
        .startStep(step: .max),
        .commit(step: 42),
        .commit(step: .max),
        .trainingFailed(reason: "stage 1 replica 0: link to w3 closed — generation 17"),
        .trainingFailed(reason: ""),
        .submitJob(json: Array(#"{"name":"mnist-mlp","layers":[784,128,10],"note":"ünïcödé ✓"}"#.utf8)),
        .submitJob(json: []),
        .stepAbandoned(step: 41, reason: "lost the data-plane link to w4"),
        .stepAbandoned(step: .max, reason: ""),
        .checkpoint(step: 0),
        .checkpoint(step: 120),
        .checkpointWritten(CheckpointWritten(step: 120, stage: 1, rawBytes: 4_243_496, storedBytes: 3_570_112, writeTime: .milliseconds(41))),
        .checkpointWritten(CheckpointWritten(step: .max, stage: .max, error: "no space left on device — checkpoint skipped")),
    ] + training + refusals

    static let training: [ControlMessage] = assignments.map { ControlMessage.assign($0) } + stepReports.map { ControlMessage.stepDone($0) }

    static let refusals: [ControlMessage] = Refused.Code.allCases.map { ControlMessage.refused(Refused($0, "refused with \($0) — try again")) }
        + [ControlMessage.refused(Refused(.badRequest, ""))]

    static let generations: [Generation] = [.zero, 1, 12_345, Generation(.max)]
}
