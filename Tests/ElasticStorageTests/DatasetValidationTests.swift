import ElasticStorage
import Foundation
import Testing

@Suite struct DatasetValidationTests {
    @Test func trainingChecksNameTheMismatch() throws {
        let shape = DatasetShape(samples: 65_536, features: 255, classes: 10)
        expectDatasetError(.featureCountMismatch, mentioning: "data set has 255 features, the model's first layer expects 256") {
            try shape.checkFits(modelInputs: 256, modelOutputs: 10, globalBatch: 256)
        }
        let w1 = DatasetShape(samples: 65_536, features: 256, classes: 10)
        try w1.checkFits(modelInputs: 256, modelOutputs: 10, globalBatch: 256)
        try w1.checkFits(modelInputs: 256, modelOutputs: 12, globalBatch: 65_536)
        expectDatasetError(.classCountMismatch, mentioning: "10 classes (labels 0…9), the model's last layer has only 8 outputs") {
            try w1.checkFits(modelInputs: 256, modelOutputs: 8, globalBatch: 256)
        }
        expectDatasetError(.batchTooLarge, mentioning: "global batch of 70000 is larger than data/w1's 65536 samples") {
            try w1.checkFits(modelInputs: 256, modelOutputs: 10, globalBatch: 70_000, name: "data/w1")
        }
        expectDatasetError(.batchTooLarge, mentioning: "at least 1") { try w1.checkFits(modelInputs: 256, modelOutputs: 10, globalBatch: 0) }
        #expect(w1.stepsPerEpoch(batch: 256) == 256 && w1.samplesDroppedPerEpoch(batch: 256) == 0)
        let odd = DatasetShape(samples: 1000, features: 4, classes: 2)
        #expect(odd.stepsPerEpoch(batch: 256) == 3 && odd.samplesDroppedPerEpoch(batch: 256) == 232)
    }

    @Test func labelChecks() throws {
        try DatasetShape.checkLabels([0, 1, 9], classes: 10)
        expectDatasetError(.labelOutOfRange, mentioning: "sample 2 has label 10, outside 0…9") { try DatasetShape.checkLabels([0, 1, 10], classes: 10) }
        expectDatasetError(.labelOutOfRange, mentioning: "sample 1 has label -3") { try DatasetShape.checkLabels([0, -3], classes: 10) }
        expectDatasetError(.labelOutOfRange, mentioning: "sample 101") { try DatasetShape.checkLabels([0, 12], classes: 10, firstSample: 100, source: "y.npy") }
    }

    @Test func crc32cKnownValues() {
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(CRC32C.checksum([UInt8](repeating: 0, count: 32)) == 0x8A91_36AA)
        #expect(CRC32C.checksum([UInt8](repeating: 0xFF, count: 32)) == 0x62A8_AB43)
        #expect(CRC32C.checksum((0..<32).map(UInt8.init)) == 0x46DD_794E)
        #expect(CRC32C.checksum([]) == 0)
        // Incremental updates equal a single pass, whatever the split.
        let bytes = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 37 &+ 11) }
        let whole = CRC32C.checksum(bytes)
        for split in [0, 1, 7, 8, 9, 500, 999, 1000] {
            var crc = CRC32C()
            crc.update(Array(bytes[..<split]))
            crc.update(Array(bytes[split...]))
            #expect(crc.value == whole)
        }
        #expect(CRC32C.hex(0x0A0B_0C0D) == "0a0b0c0d" && CRC32C.parseHex("0a0b0c0d") == 0x0A0B_0C0D)
        #expect(CRC32C.parseHex("+a0b0c0d") == nil && CRC32C.parseHex("abc") == nil)
    }

    @Test func headerEncodesTheDocumentedLayout() throws {
        let header = ShardHeader(firstSample: 7, sampleCount: 3, featureCount: 2, labels: .classIndex(classes: 5), payloadCRC32C: 0xDEAD_BEEF)
        let bytes = header.encoded()
        #expect(bytes.count == 64)
        #expect(Array(bytes[0..<8]) == [0x89, 0x45, 0x44, 0x53, 0x0D, 0x0A, 0x1A, 0x0A])
        #expect(bytes[8] == 1 && bytes[10] == 64 && bytes[16] == 7 && bytes[24] == 3 && bytes[32] == 2)
        #expect(bytes[36] == 1 && bytes[38] == 1 && bytes[40] == 5 && bytes[44] == 1 && bytes[48] == 3 * (2 * 4 + 4))
        #expect(Array(bytes[56..<60]) == [0xEF, 0xBE, 0xAD, 0xDE])
        #expect(try ShardHeader.decode(bytes, fileLength: 64 + 36, path: "h") == header)
    }

    @Test func inspectReportsEveryShard() throws {
        let directory = try TemporaryDirectory()
        defer { directory.remove() }
        let data = sampleData(count: 60, features: 4, classes: 3, seed: 21)
        try Dataset.write(data, to: directory.path, shards: 4, name: "toy", origin: "test seed 21")
        let counts = (0..<3).map { c in data.labels.count { $0 == Int32(c) } }

        var report = try Dataset.inspect(directory.path)
        #expect(report.isValid && report.verified)
        #expect(report.samples == 60 && report.features == 4 && report.classes == 3 && report.name == "toy")
        #expect(report.classCounts == counts && report.classCountsSource == "labels")
        #expect(report.shards.map(\.status) == [.ok, .ok, .ok, .ok])
        #expect(report.shards.map(\.firstSample) == [0, 15, 30, 45] && report.shards.last?.endSample == 60)
        #expect(report.table.contains("shard-00003.eds  45..<60"))
        #expect(report.table.contains("origin        test seed 21"))
        let json = try JSONEncoder().encode(report)
        #expect(try JSONDecoder().decode(DatasetReport.self, from: json) == report)

        report = try Dataset.inspect(directory.path, verify: false)
        #expect(report.isValid && !report.verified && report.shards.allSatisfy { $0.status == .headerOK })
        #expect(report.classCountsSource == "manifest" && report.classCounts == counts)

        // Damage two shards: both are reported, the rest still checked.
        let one = directory.file("shard-00001.eds")
        var bytes = readBytes(one)
        bytes[100] ^= 0xFF
        try writeBytes(bytes, to: one)
        try FileManager.default.removeItem(atPath: directory.file("shard-00003.eds"))
        report = try Dataset.inspect(directory.path)
        #expect(!report.isValid && report.problems.count == 2)
        #expect(report.shards.map(\.status) == [.ok, .failed, .ok, .failed])
        #expect(report.shards[1].errorCode == "payloadChecksumMismatch" && report.shards[3].errorCode == "shardMissing")
        #expect(report.shards[1].problem?.contains(one) == true)
        #expect(report.classCountsSource == "manifest")
        #expect(report.table.contains("problems:"))
        expectDatasetError(.manifestMissing, mentioning: "does not exist") { try Dataset.inspect(directory.file("missing")) }
    }
}
