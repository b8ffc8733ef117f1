import ElasticTestSupport
import ElasticCore
import ElasticWire
import Testing

/// A message type of one plane, as the fuzzer sees it.
protocol FuzzedMessage: Equatable {
    init(frame: Frame) throws(WireError)
    func frame(generation: Generation) -> Frame
}

extension ControlMessage: FuzzedMessage {}
extension DataMessage: FuzzedMessage {}

/// What mutations start from: whole encoded frames, and (kind, payload) pairs.
struct FuzzCorpus {
    let seeds: [[UInt8]]
    let payloads: [(kind: UInt8, payload: [UInt8])]

    init(frames: [Frame]) {
        seeds = frames.map { $0.encoded() }
        payloads = frames.map { ($0.kind, $0.payload) }
    }

    static let control = FuzzCorpus(frames: Samples.all.enumerated().map { index, message in
        message.frame(generation: Samples.generations[index % Samples.generations.count])
    })
    /// Small data messages only, so that mutations (and lengths written over length fields)
    /// land in every field.
    static let data = FuzzCorpus(frames: DataSamples.small.enumerated().map { index, message in
        message.frame(generation: Samples.generations[index % Samples.generations.count])
    })
}

/// Random and mutated input for FrameDecoder and ControlMessage(frame:) / DataMessage(frame:).
/// Whatever comes in must end as a frame and a message, or as a WireError (typed throws: nothing
/// else can escape), never as a trap or a hang; and whatever decodes must re-encode to the very
/// frame it came from, and survive another round trip unchanged.
@Suite("Wire fuzzing")
struct WireFuzzTests {
    static let controlCases = 100_000
    static let dataCases = 25_000
    static let maximumFrameSize = 2_048

    struct Statistics {
        var inputs = 0
        var frames = 0
        var messages = 0
        /// Messages decoded, by kind byte.
        var kinds: [UInt8: Int] = [:]
        var errors: [String: Int] = [:]
    }

    @Test func mutatedAndRandomInputsNeverTrapAndWhatDecodesRoundTrips() {
        let seed = TestSeed.make("Wire fuzz")
        let statistics = fuzz(ControlMessage.self, corpus: .control, cases: Self.controlCases, seed: seed)
        print("wire fuzz (control): \(statistics.inputs) inputs, \(statistics.frames) frames, \(statistics.messages) messages (fewest of a kind: \(statistics.kinds.values.min() ?? 0)), errors: \(statistics.errors.sorted { $0.key < $1.key })")
        expectCoverage(statistics, cases: Self.controlCases)
        for kind in ControlMessage.Kind.allCases {
            #expect(statistics.kinds[kind.rawValue, default: 0] >= 20, "only \(statistics.kinds[kind.rawValue, default: 0]) × \(kind) decoded")
        }
    }

    @Test func mutatedAndRandomDataPlaneInputsNeverTrapAndWhatDecodesRoundTrips() {
        let seed = TestSeed.make("Wire fuzz, data plane")
        let statistics = fuzz(DataMessage.self, corpus: .data, cases: Self.dataCases, seed: seed)
        print("wire fuzz (data): \(statistics.inputs) inputs, \(statistics.frames) frames, \(statistics.messages) messages (by kind: \(statistics.kinds.sorted { $0.key < $1.key })), errors: \(statistics.errors.sorted { $0.key < $1.key })")
        expectCoverage(statistics, cases: Self.dataCases)
        for kind: UInt8 in 64...69 {
            #expect(statistics.kinds[kind, default: 0] >= 200, "only \(statistics.kinds[kind, default: 0]) × kind \(kind) decoded")
        }
    }

    func expectCoverage(_ statistics: Statistics, cases: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(statistics.inputs >= cases, sourceLocation: sourceLocation)
        // The mutations must reach every way of failing, and still let plenty through.
        for code in [WireError.Code.frameTooLarge, .frameTooShort, .unsupportedVersion, .unknownMessageKind, .truncated, .trailingBytes, .invalidValue] {
            #expect(statistics.errors[code.description, default: 0] >= 50, "only \(statistics.errors[code.description, default: 0]) × \(code)", sourceLocation: sourceLocation)
        }
        #expect(statistics.messages >= cases / 10, sourceLocation: sourceLocation)
    }

    func fuzz<Message: FuzzedMessage>(_: Message.Type, corpus: FuzzCorpus, cases: Int, seed: UInt64) -> Statistics {
        var rng = SplitMix64(seed: seed)
        var statistics = Statistics()
        var failures = 0
        func fail(_ comment: Comment) {
            failures += 1
            if failures <= 10 { Issue.record("\(comment) — seed \(seed)") }
        }

        for index in 0..<cases {
            statistics.inputs += 1
            if rng.below(5) < 3 {
                // Whole streams through the frame decoder.
                let bytes = makeStream(&rng, corpus)
                var decoder = FrameDecoder(maximumFrameSize: Self.maximumFrameSize)
                let split = rng.below(3) == 0 ? rng.below(bytes.count + 1) : bytes.count
                decoder.append(bytes[..<split])
                var pulls = 0
                do {
                    while let frame = try decoder.next() {
                        pulls += 1
                        statistics.frames += 1
                        check(Message.self, frame, &statistics, fail: fail, input: index)
                    }
                    decoder.append(bytes[split...])
                    while let frame = try decoder.next() {
                        pulls += 1
                        statistics.frames += 1
                        check(Message.self, frame, &statistics, fail: fail, input: index)
                    }
                } catch {
                    statistics.errors[error.code.description, default: 0] += 1
                }
                if pulls > bytes.count / Frame.headerSize + 1 { fail("input \(index): \(pulls) frames out of \(bytes.count) bytes") }
            } else {
                // Payloads straight to the message decoder, mostly under the right kind.
                let (kind, base) = corpus.payloads[rng.below(corpus.payloads.count)]
                var payload = base
                for _ in 0...rng.below(3) { mutate(&payload, &rng, corpus) }
                let frameKind = rng.below(10) == 0 ? rng.byte() : kind
                statistics.frames += 1
                check(Message.self, Frame(kind: frameKind, generation: Generation(rng.next()), payload: payload), &statistics, fail: fail, input: index)
            }
            if failures > 10 { break }
        }
        return statistics
    }

    /// Decodes a frame; when it decodes, re-encodes it (which must give the same frame back) and
    /// decodes that again.
    func check<Message: FuzzedMessage>(_: Message.Type, _ frame: Frame, _ statistics: inout Statistics, fail: (Comment) -> Void, input: Int) {
        let message: Message
        do {
            message = try Message(frame: frame)
        } catch {
            statistics.errors[error.code.description, default: 0] += 1
            return
        }
        statistics.messages += 1
        statistics.kinds[frame.kind, default: 0] += 1
        let again = message.frame(generation: frame.generation)
        // One encoding per message: the decoder accepts nothing the encoder would not write.
        if again != frame {
            fail("input \(input): kind \(frame.kind) payload \(frame.payload) decoded to \(message), which encodes as kind \(again.kind) payload \(again.payload)")
            return
        }
        do {
            let frames = try decodeFrames(again.encoded(), maximumFrameSize: Self.maximumFrameSize)
            guard frames == [again] else {
                fail("input \(input): \(message) re-encoded to a stream of \(frames.count) frames")
                return
            }
            let decodedAgain = try Message(frame: frames[0])
            // A message holding a NaN (a training status before its first step, a tensor) is
            // not equal to a copy of itself; for those the bytes above and below are the check.
            // (`message == message` would not tell: arrays compare equal by identity first.)
            let twin = try Message(frame: frame)
            if twin == message, decodedAgain != message {
                fail("input \(input): \(message) came back as \(decodedAgain)")
            }
            // From there on, encoding is a fixed point.
            if decodedAgain.frame(generation: frame.generation) != again {
                fail("input \(input): re-encoding \(decodedAgain) is not stable")
            }
        } catch {
            fail("input \(input): \(message) re-encoded to bytes that do not decode: \(error)")
        }
    }

    // MARK: Inputs

    func makeStream(_ rng: inout SplitMix64, _ corpus: FuzzCorpus) -> [UInt8] {
        switch rng.below(20) {
        case 0:
            // Pure noise.
            return (0..<rng.below(64)).map { _ in rng.byte() }
        case 1:
            // A plausible header over noise: right version, any kind, any payload.
            let size = rng.below(48)
            return payload { $0.write(UInt32(Frame.headerRest + size)); $0.write(Frame.version); $0.write(rng.byte()); $0.write(rng.next()) }
                + (0..<size).map { _ in rng.byte() }
        case 2:
            // Several frames back to back, one of them mutated.
            var stream: [UInt8] = []
            let mutated = rng.below(3)
            for part in 0..<3 {
                var bytes = corpus.seeds[rng.below(corpus.seeds.count)]
                if part == mutated { mutate(&bytes, &rng, corpus) }
                stream += bytes
            }
            return stream
        default:
            var bytes = corpus.seeds[rng.below(corpus.seeds.count)]
            for _ in 0...rng.below(3) { mutate(&bytes, &rng, corpus) }
            // Mostly make the length field agree again, so that the damage reaches the payload.
            if rng.below(3) > 0, bytes.count >= 4 {
                overwrite(&bytes, at: 0, with: UInt64(bytes.count - 4), width: 4)
            }
            return bytes
        }
    }

    static let interestingBytes: [UInt8] = [0, 1, 2, 0x7F, 0x80, 0xFE, 0xFF]
    static let interesting32: [UInt64] = [0, 1, 2, 9, 10, 16, 22, 60, 0x7F, 0xFF, 0x100, 0xFFFF, 0x1_0000, 0x7FFF_FFFF, 0xFFFF_FFFF]
    static let interesting64: [UInt64] = [0, 1, .max, 1 << 63, 1 << 62, (1 << 63) - 1, 0x0000_8000_0000_0000, 0x7FF0_0000_0000_0000, 0xFFF8_0000_0000_0000]

    func mutate(_ bytes: inout [UInt8], _ rng: inout SplitMix64, _ corpus: FuzzCorpus) {
        switch rng.below(11) {
        case 0 where !bytes.isEmpty:  // flip a bit
            bytes[rng.below(bytes.count)] ^= 1 << UInt8(rng.below(8))
        case 1 where !bytes.isEmpty:  // an interesting byte
            bytes[rng.below(bytes.count)] = Self.interestingBytes[rng.below(Self.interestingBytes.count)]
        case 2 where !bytes.isEmpty:  // a random byte
            bytes[rng.below(bytes.count)] = rng.byte()
        case 3:  // truncate
            bytes.removeLast(rng.below(bytes.count + 1))
        case 4:  // extend
            bytes += (0..<1 + rng.below(16)).map { _ in rng.byte() }
        case 5:  // splice with another sample
            let other = corpus.seeds[rng.below(corpus.seeds.count)]
            bytes = Array(bytes[..<rng.below(bytes.count + 1)]) + other[rng.below(other.count + 1)...]
        case 6:  // overwrite the frame's length field
            overwrite(&bytes, at: 0, with: rng.below(2) == 0 ? Self.interesting32[rng.below(Self.interesting32.count)] : UInt64(max(0, bytes.count - 4 + rng.below(5) - 2)), width: 4)
        case 7 where bytes.count >= 4:  // overwrite an inner length, count or 32-bit field
            overwrite(&bytes, at: rng.below(bytes.count - 3), with: Self.interesting32[rng.below(Self.interesting32.count)], width: 4)
        case 8 where bytes.count >= 8:  // overwrite a 64-bit field (generations, durations, doubles)
            overwrite(&bytes, at: rng.below(bytes.count - 7), with: rng.below(3) == 0 ? rng.next() : Self.interesting64[rng.below(Self.interesting64.count)], width: 8)
        case 9:  // insert bytes
            bytes.insert(contentsOf: (0..<1 + rng.below(4)).map { _ in rng.byte() }, at: rng.below(bytes.count + 1))
        case 10 where !bytes.isEmpty:  // delete a range
            let start = rng.below(bytes.count)
            bytes.removeSubrange(start..<min(bytes.count, start + 1 + rng.below(8)))
        default:
            bytes.append(rng.byte())
        }
    }

    func overwrite(_ bytes: inout [UInt8], at offset: Int, with value: UInt64, width: Int) {
        for i in 0..<width where offset + i < bytes.count {
            bytes[offset + i] = UInt8(truncatingIfNeeded: value >> (8 * UInt64(width - 1 - i)))
        }
    }
}
