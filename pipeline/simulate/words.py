"""Common words per language, the vocabulary of simulated utterances.

Utterances are random word sequences: a diarization model needs speech with the
phonetics and prosody of the language, not meaning. Keys are the word-list names
used by :data:`pipeline.simulate.speakers.LANGUAGES`.
"""

from __future__ import annotations

WORDS: dict[str, tuple[str, ...]] = {
    "id": tuple(
        """
        saya kamu dia kami kita mereka ini itu di ke dari dan atau tetapi karena jadi yang
        tidak bukan sudah belum akan sedang masih juga hanya sangat lebih paling sekali lagi
        ada apa siapa kapan mana bagaimana mengapa berapa bisa harus mau ingin boleh perlu
        pergi datang pulang makan minum tidur bekerja belajar membaca menulis berbicara
        mendengar melihat membeli menjual membuat memberi bertanya menjawab bermain berjalan
        rumah kantor sekolah pasar jalan kota desa kamar dapur meja kursi pintu jendela buku
        mobil motor kereta pesawat kapal air nasi roti kopi teh uang harga waktu hari minggu
        bulan tahun pagi siang sore malam besok kemarin sekarang nanti tadi selalu kadang
        baik buruk besar kecil baru lama panjang pendek mahal murah cepat lambat panas dingin
        senang sedih capek sakit sehat ramai sepi bersih kotor mudah sulit penting benar salah
        teman keluarga ibu bapak kakak adik anak orang guru dokter polisi tetangga pekerjaan
        masalah cerita berita acara rapat liburan hujan cuaca listrik telepon internet
        """.split()
    ),
    "ms": tuple(
        """
        saya awak dia kami kita mereka ini itu di ke dari dan atau tetapi kerana jadi yang
        tidak bukan sudah belum akan sedang masih juga hanya sangat lebih paling sekali lagi
        ada apa siapa bila mana bagaimana kenapa berapa boleh mesti mahu hendak perlu pergi
        datang balik makan minum tidur bekerja belajar membaca menulis bercakap mendengar
        melihat membeli menjual membuat memberi bertanya menjawab bermain berjalan rumah
        pejabat sekolah pasar jalan bandar kampung bilik dapur meja kerusi pintu tingkap buku
        kereta motosikal bas kapal terbang air nasi roti kopi teh duit harga masa hari minggu
        bulan tahun pagi tengah hari petang malam esok semalam sekarang nanti tadi selalu
        kadang baik teruk besar kecil baharu lama panjang pendek mahal murah cepat lambat
        panas sejuk gembira sedih penat sakit sihat ramai sunyi bersih kotor senang susah
        penting betul salah kawan keluarga emak ayah abang kakak adik anak orang cikgu doktor
        polis jiran kerja masalah cerita berita majlis mesyuarat cuti hujan cuaca telefon
        """.split()
    ),
    "en": tuple(
        """
        i you he she we they it this that there here and or but because so if when then
        not never already still just only very really quite more most again also too
        what who where when why how which can could will would should must may might
        go come leave eat drink sleep work study read write talk speak listen look see
        buy sell make give ask answer play walk run think know want need like love help
        house office school market street city town room kitchen table chair door window
        book car bus train plane boat water rice bread coffee tea money price time day week
        month year morning afternoon evening night tomorrow yesterday today now later soon
        always sometimes usually good bad big small new old long short expensive cheap fast
        slow hot cold happy sad tired sick busy quiet clean easy hard important right wrong
        friend family mother father brother sister child people teacher doctor neighbour job
        problem story news meeting holiday weather rain phone computer idea plan question
        """.split()
    ),
}
