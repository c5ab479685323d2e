//! Extraction: each supported type gives the right text; hostile files give a
//! clear error (or a correct result), quickly and with bounded memory.

mod common;

use std::io::Write;

use common::{obj, one_page, pdf, show, stream, text_pdf, zlib, zlib_of_zeros};
use voxgate_knowledge::{ExtractError, Kind, Limits, extract, safe_file_name};

fn ok(bytes: &[u8], name: &str) -> voxgate_knowledge::Document {
    extract(bytes, name, &Limits::default()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn err(bytes: &[u8], name: &str) -> ExtractError {
    match extract(bytes, name, &Limits::default()) {
        Ok(doc) => panic!("{name}: expected an error, got {:?} {:?}", doc.kind, doc.text.chars().take(200).collect::<String>()),
        Err(e) => e,
    }
}

// --- Each type -------------------------------------------------------------------

#[test]
fn plain_text_utf8_with_and_without_bom_and_utf16() {
    let doc = ok("Grüße aus Köln.\r\nSecond line.\n\n\n\nNext paragraph.".as_bytes(), "notes.txt");
    assert_eq!(doc.kind, Kind::Text);
    assert_eq!(doc.text, "Grüße aus Köln.\nSecond line.\n\nNext paragraph.");

    let mut bom = b"\xEF\xBB\xBF".to_vec();
    bom.extend_from_slice("Ça va".as_bytes());
    assert_eq!(ok(&bom, "a.txt").text, "Ça va");

    for (mark, unit) in [(b"\xFF\xFE", u16::to_le_bytes as fn(u16) -> [u8; 2]), (b"\xFE\xFF", u16::to_be_bytes)] {
        let mut utf16 = mark.to_vec();
        utf16.extend("naïve café 🎉".encode_utf16().flat_map(unit));
        assert_eq!(ok(&utf16, "u16.txt").text, "naïve café 🎉");
    }
}

#[test]
fn markdown_keeps_the_words_and_drops_markup_and_raw_html() {
    let md = "# Opening hours\n\nWe open at **9:00** on [Saturday](https://example.com/sat).\n\n\
              <script>alert('x')</script>\n\n- Monday: closed\n- Tuesday: 10:00\n\n\
              | Day | Hours |\n|-----|-------|\n| Sun | 12-16 |\n\n```\ncode block\n```\n\n![a shop front](shop.png)";
    let doc = ok(md.as_bytes(), "hours.md");
    assert_eq!(doc.kind, Kind::Markdown);
    let text = &doc.text;
    for want in ["Opening hours", "We open at 9:00 on Saturday.", "- Monday: closed", "Sun | 12-16", "code block", "a shop front"] {
        assert!(text.contains(want), "{want:?} missing from {text:?}");
    }
    for unwanted in ["**", "https://", "alert", "<script", "](", "#"] {
        assert!(!text.contains(unwanted), "{unwanted:?} left in {text:?}");
    }
}

#[test]
fn html_gives_readable_text_without_scripts_or_styles() {
    let html = "<!DOCTYPE html><html><head><title>T</title><style>body{color:red}</style>\
                <script>var secret = 'do not index';</script></head><body>\
                <h1>Shipping</h1><p>We ship to <b>Spain</b> &amp; Portugal in 3 days.</p>\
                <ul><li>Standard</li><li>Express</li></ul>\
                <table><tr><td>Zone</td><td>Price</td></tr><tr><td>EU</td><td>5 €</td></tr></table>\
                <noscript>enable js</noscript><script>more()</script></body></html>";
    for name in ["page.html", "page.txt", "page"] {
        let doc = ok(html.as_bytes(), name);
        assert_eq!(doc.kind, Kind::Html, "{name}");
        let text = &doc.text;
        for want in ["Shipping", "We ship to Spain & Portugal in 3 days.", "Standard", "Express", "EU", "5 €"] {
            assert!(text.contains(want), "{name}: {want:?} missing from {text:?}");
        }
        for unwanted in ["secret", "color:red", "more()", "<", "&amp;"] {
            assert!(!text.contains(unwanted), "{name}: {unwanted:?} left in {text:?}");
        }
    }
}

#[test]
fn csv_becomes_one_line_per_row_with_headers() {
    let csv = "name,city,note\nAlice,Paris,\"likes, commas\"\nBob,,\"two\nlines\"\n";
    let doc = ok(csv.as_bytes(), "people.csv");
    assert_eq!(doc.kind, Kind::Csv);
    assert_eq!(doc.text, "name: Alice; city: Paris; note: likes, commas\nname: Bob; note: two lines");

    let semicolons = ok("Produkt;Preis\nKaffee;2,50\n".as_bytes(), "preise.csv");
    assert_eq!(semicolons.text, "Produkt: Kaffee; Preis: 2,50");
    let tabs = ok("a\tb\n1\t2\n".as_bytes(), "x.tsv");
    assert_eq!(tabs.text, "a: 1; b: 2");
    let ragged = ok("a,b\n1,2,3\n".as_bytes(), "ragged.csv");
    assert_eq!(ragged.text, "a: 1; b: 2; column 3: 3");
}

#[test]
fn a_hand_written_pdf_gives_its_text() {
    let doc = ok(&text_pdf(&["Opening hours", "We open at nine on Saturday (and Sunday)."]), "hours.pdf");
    assert_eq!(doc.kind, Kind::Pdf);
    assert!(doc.text.contains("Opening hours"), "{:?}", doc.text);
    assert!(doc.text.contains("We open at nine on Saturday (and Sunday)."), "{:?}", doc.text);
}

#[test]
fn a_flate_compressed_pdf_named_txt_is_still_a_pdf() {
    let content = zlib(&show(&["Compressed content stream"]));
    let bytes = pdf(&one_page(stream("/Filter /FlateDecode", &content), "", vec![]), "");
    let doc = ok(&bytes, "misleading.txt");
    assert_eq!(doc.kind, Kind::Pdf);
    assert!(doc.text.contains("Compressed content stream"), "{:?}", doc.text);
}

/// tests/fixtures/two-pages.pdf, written by fpdf2 (make_pdf.py): an embedded
/// TrueType subset with a ToUnicode map on page 1, Helvetica on page 2.
#[test]
fn a_real_generated_pdf_gives_both_pages_with_accents() {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/two-pages.pdf")).unwrap();
    let doc = ok(&bytes, "two-pages.pdf");
    let text = doc.text.split_whitespace().collect::<Vec<_>>().join(" ");
    for want in ["Opening hours", "The café in Zürich opens at nine o'clock on Saturday.", "Refund policy", "Refunds are paid within fourteen days"] {
        assert!(text.contains(want), "{want:?} missing from {text:?}");
    }
    assert!(text.find("Opening").unwrap() < text.find("Refund").unwrap());
}

// --- Names, sizes, types ---------------------------------------------------------------

#[test]
fn file_names_lose_paths_controls_and_tricks() {
    assert_eq!(safe_file_name("../../etc/passwd"), "passwd");
    assert_eq!(safe_file_name("C:\\Users\\x\\report.pdf"), "report.pdf");
    assert_eq!(safe_file_name("..\\..\\boot.ini"), "boot.ini");
    assert_eq!(safe_file_name("a\0b\nc\u{7}.txt"), "ab c.txt");
    assert_eq!(safe_file_name("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
    assert_eq!(safe_file_name("  my   holiday\tnotes .md "), "my holiday notes .md");
    assert_eq!(safe_file_name("what?<>|*:\".txt"), "what_______.txt");
    assert_eq!(safe_file_name(".hidden"), "hidden");
    assert_eq!(safe_file_name("CON.txt"), "_CON.txt");
    for empty in ["", "..", "../", "/", "\0\0", " . "] {
        assert_eq!(safe_file_name(empty), "file", "{empty:?}");
    }
    let long = format!("{}.pdf", "é".repeat(500));
    let short = safe_file_name(&long);
    assert_eq!(short.chars().count(), voxgate_knowledge::MAX_FILE_NAME_CHARS);
    assert!(short.ends_with(".pdf"));

    let doc = ok(b"hello", "../../etc/passwd.txt");
    assert_eq!(doc.name, "passwd.txt");
    let e = err(b"\0\0\0", "../../../../secret/x.txt");
    assert!(e.to_string().starts_with("x.txt:"), "{e}");
}

#[test]
fn too_large_input_is_413_before_reading_it() {
    let limits = Limits { max_input_bytes: 1_000, ..Limits::default() };
    let e = extract(&vec![b'a'; 1_001], "big.txt", &limits).unwrap_err();
    assert!(matches!(e, ExtractError::TooLarge { .. }), "{e}");
    assert_eq!((e.code(), e.http_status()), ("file_too_large", 413));
    assert!(e.to_string().contains("big.txt") && e.to_string().contains("1000"), "{e}");
    extract(&vec![b'a'; 1_000], "ok.txt", &limits).unwrap();
}

#[test]
fn output_past_the_character_limit_is_413() {
    let limits = Limits { max_output_chars: 100, ..Limits::default() };
    let e = extract("word ".repeat(50).as_bytes(), "long.txt", &limits).unwrap_err();
    assert_eq!(e.http_status(), 413, "{e}");
    let lines: Vec<String> = (0..40).map(|i| format!("line number {i} of a long PDF")).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let e = extract(&text_pdf(&refs), "long.pdf", &limits).unwrap_err();
    assert!(matches!(e, ExtractError::TooLarge { what, .. } if what.contains("characters")), "{e}");
}

#[test]
fn a_zip_renamed_pdf_is_an_unsupported_type() {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("notes/a.txt", zip::write::SimpleFileOptions::default()).unwrap();
    zip.write_all(b"secret notes").unwrap();
    let bytes = zip.finish().unwrap().into_inner();
    for name in ["report.pdf", "report.txt", "report.csv"] {
        let e = err(&bytes, name);
        assert!(matches!(&e, ExtractError::Unsupported { detected, .. } if detected.contains("zip")), "{name}: {e}");
        assert_eq!((e.code(), e.http_status()), ("unsupported_file_type", 415));
        assert!(e.to_string().contains(name), "{e}");
    }
}

#[test]
fn images_and_executables_are_refused_whatever_their_name() {
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89";
    let e = err(png, "notes.txt");
    assert!(matches!(&e, ExtractError::Unsupported { detected, .. } if detected == "image/png"), "{e}");
    let elf = b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0\x02\0\x3e\0";
    assert_eq!(err(elf, "readme.md").http_status(), 415);
}

#[test]
fn binary_in_a_txt_is_refused_and_latin1_is_not_utf8() {
    let mut rng = 0x2545F4914F6CDD1Du64;
    let noise: Vec<u8> = (0..4096)
        .map(|_| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng >> 24) as u8
        })
        .collect();
    let e = err(&noise, "data.txt");
    assert!(matches!(e, ExtractError::Binary { .. }), "{e}");
    assert_eq!((e.code(), e.http_status()), ("binary_content", 415));

    let controls: Vec<u8> = b"ab".iter().chain([1u8, 2, 3, 4, 5, 6, 7, 8].iter().cycle().take(100)).copied().collect();
    assert!(matches!(err(&controls, "ctl.txt"), ExtractError::Binary { .. }));

    let latin1 = b"Caf\xe9 cr\xe8me";
    let e = err(latin1, "menu.txt");
    assert!(matches!(e, ExtractError::NotUtf8 { offset: 3, .. }), "{e}");
    assert_eq!(e.http_status(), 422);
    assert!(e.to_string().contains("UTF-8"), "{e}");

    assert!(matches!(err(b"\xFF\xFEa", "odd.txt"), ExtractError::Malformed { .. }));
    assert!(matches!(err(b"\xFF\xFE\x00\xD8", "surrogate.txt"), ExtractError::Malformed { .. }));
}

#[test]
fn empty_or_blank_files_have_no_text() {
    for (bytes, name) in [(&b""[..], "empty.txt"), (b"  \n\t\n ", "blank.md"), (b"<html><script>x()</script></html>", "s.html")] {
        let e = err(bytes, name);
        assert!(matches!(e, ExtractError::NoText { .. }), "{name}: {e}");
        assert_eq!((e.code(), e.http_status()), ("no_text", 422));
    }
}

#[test]
fn a_huge_csv_is_refused_past_the_row_limit() {
    let mut csv = String::from("id,value\n");
    for i in 0..100_001 {
        csv.push_str(&format!("{i},v\n"));
    }
    let e = err(csv.as_bytes(), "huge.csv");
    assert!(matches!(&e, ExtractError::TooLarge { what, .. } if what.contains("rows")), "{e}");

    let wide = format!("{}\n", vec!["h"; 1_001].join(","));
    let e = err(wide.as_bytes(), "wide.csv");
    assert!(matches!(&e, ExtractError::TooLarge { what, .. } if what.contains("fields")), "{e}");

    let limits = Limits::default();
    let over = "x,y\n".repeat(limits.max_input_bytes / 4 + 1);
    assert_eq!(err(over.as_bytes(), "bytes.csv").http_status(), 413);
}

// --- Hostile PDFs ---------------------------------------------------------------------

/// A valid PDF whose content stream inflates to 1 GiB of zeros: refused at the
/// decompression limit; peak memory stays far below what inflating it would take.
#[test]
fn a_pdf_bomb_is_refused_with_bounded_memory() {
    let bomb = zlib_of_zeros(1 << 30);
    assert!(bomb.len() < 2 << 20, "the bomb is {} bytes", bomb.len());
    let bytes = pdf(&one_page(stream("/Filter /FlateDecode", &bomb), "", vec![]), "");
    let e = err(&bytes, "bomb.pdf");
    assert!(matches!(&e, ExtractError::TooLarge { what, .. } if what.contains("decompressed")), "{e}");
    assert_eq!(e.http_status(), 413);
    let peak = common::peak_rss();
    assert!(peak < 700 << 20, "peak memory {} MiB", peak >> 20);
}

/// The same bomb compressed twice, behind a filter name written with `#` escapes,
/// and one inside an object stream (which lopdf inflates while loading).
#[test]
fn a_doubly_compressed_or_object_stream_bomb_is_refused() {
    let twice = zlib(&zlib_of_zeros(300 << 20));
    let bytes = pdf(&one_page(stream("/Filter [/Fl#61teDecode /FlateDecode]", &twice), "", vec![]), "");
    let e = err(&bytes, "twice.pdf");
    assert!(matches!(&e, ExtractError::TooLarge { .. }), "{e}");

    let objstm = stream("/Type /ObjStm /N 1 /First 4 /Filter /FlateDecode", &zlib_of_zeros(300 << 20));
    let bytes = pdf(&one_page(stream("", &show(&["hi"])), "", vec![objstm]), "");
    let e = err(&bytes, "objstm.pdf");
    assert!(matches!(&e, ExtractError::TooLarge { .. }), "{e}");
}

#[test]
fn an_encrypted_pdf_is_refused_even_with_an_escaped_name() {
    let encrypt = obj("<< /Filter /Standard /V 1 /R 2 /O (x) /U (y) /P -4 >>");
    for key in ["/Encrypt", "/Encr#79pt"] {
        let bytes = pdf(&one_page(stream("", &show(&["secret"])), "", vec![encrypt.clone()]), &format!("{key} 6 0 R /ID [(a) (a)]"));
        let e = err(&bytes, "locked.pdf");
        assert!(matches!(e, ExtractError::Encrypted { .. }), "{key}: {e}");
        assert_eq!((e.code(), e.http_status()), ("encrypted_pdf", 422));
        assert!(e.to_string().contains("password"), "{e}");
    }
}

#[test]
fn truncated_pdfs_give_an_error_or_their_text_never_a_crash() {
    let bytes = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/two-pages.pdf")).unwrap();
    let mut cuts = 0;
    for cut in (0..bytes.len()).step_by(211).chain([bytes.len() - 1, bytes.len() / 2]) {
        match extract(&bytes[..cut], "cut.pdf", &Limits::default()) {
            Ok(doc) => assert!(doc.text.contains("Opening") || doc.text.contains("Refund"), "cut at {cut}: {:?}", doc.text),
            Err(e) => {
                assert!(matches!(e.code(), "malformed_file" | "no_text" | "binary_content" | "not_utf8"), "cut at {cut}: {e}");
                cuts += 1;
            }
        }
    }
    assert!(cuts > 0, "no cut was refused");
    let e = err(&bytes[..bytes.len() / 2], "half.pdf");
    assert!(e.to_string().contains("half.pdf"), "{e}");
}

#[test]
fn deeply_nested_pdf_objects_and_operands_are_refused_or_read() {
    let deep = format!("<< /Type /Catalog /Pages 2 0 R /Junk {}1{} >>", "[".repeat(100_000), "]".repeat(100_000));
    let mut objects = one_page(stream("", &show(&["still here"])), "", vec![]);
    objects[0] = obj(&deep);
    match extract(&pdf(&objects, ""), "deep.pdf", &Limits::default()) {
        Ok(doc) => assert!(doc.text.contains("still here"), "{:?}", doc.text),
        Err(e) => assert_eq!(e.code(), "malformed_file", "{e}"),
    }

    let mut content = show(&["before"]);
    content.extend_from_slice(format!("\nBT {}(x){} TJ ET", "[".repeat(200_000), "]".repeat(200_000)).as_bytes());
    match extract(&pdf(&one_page(stream("", &content), "", vec![]), ""), "deep-content.pdf", &Limits::default()) {
        Ok(doc) => assert!(doc.text.contains("before"), "{:?}", doc.text),
        Err(e) => assert_eq!(e.code(), "malformed_file", "{e}"),
    }
}

#[test]
fn a_form_xobject_that_draws_itself_is_refused() {
    let page_extra = "/XObject << /X1 6 0 R >>";
    let xobject = stream("/Type /XObject /Subtype /Form /BBox [0 0 10 10] /Resources << /XObject << /X1 6 0 R >> >>", b"/X1 Do");
    let bytes = pdf(&one_page(stream("", b"/X1 Do"), page_extra, vec![xobject]), "");
    let e = err(&bytes, "loop.pdf");
    assert!(matches!(&e, ExtractError::Malformed { detail, .. } if detail.contains("itself")), "{e}");
}

#[test]
fn exponentially_repeated_form_xobjects_are_refused() {
    // X1 draws X2 ten times, X2 draws X3 ten times... a million draws of X6.
    let mut more = Vec::new();
    for level in 1..=6 {
        let next = 6 + level;
        let (resources, content) = if level < 6 {
            (format!("/Resources << /XObject << /N {next} 0 R >> >>"), "/N Do\n".repeat(10))
        } else {
            (String::new(), "BT /F1 12 Tf (leaf) Tj ET".to_string())
        };
        more.push(stream(&format!("/Type /XObject /Subtype /Form /BBox [0 0 10 10] {resources}"), content.as_bytes()));
    }
    let bytes = pdf(&one_page(stream("", b"/N Do"), "/XObject << /N 6 0 R >>", more), "");
    let e = err(&bytes, "fan.pdf");
    assert!(matches!(&e, ExtractError::TooLarge { what, .. } if what.contains("XObject")), "{e}");
}

#[test]
fn a_page_that_is_its_own_parent_is_refused() {
    let objects = vec![
        obj("<< /Type /Catalog /Pages 2 0 R >>"),
        obj("<< /Type /Pages /Kids [3 0 R] /Count 1 >>"),
        obj("<< /Type /Page /Parent 3 0 R /Contents 4 0 R >>"),
        stream("", b"BT (x) Tj ET"),
    ];
    let e = err(&pdf(&objects, ""), "parent.pdf");
    assert_eq!(e.code(), "malformed_file", "{e}");
}

#[test]
fn a_pdf_with_no_pages_or_garbage_after_the_header_is_malformed() {
    let e = err(b"%PDF-1.7\nthis is not a pdf at all\n%%EOF", "junk.pdf");
    assert_eq!((e.code(), e.http_status()), ("malformed_file", 422), "{e}");
    let no_pages = pdf(&[obj("<< /Type /Catalog /Pages 2 0 R >>"), obj("<< /Type /Pages /Kids [] /Count 0 >>")], "");
    assert_eq!(err(&no_pages, "empty.pdf").code(), "malformed_file");
}

#[test]
fn too_many_pages_is_413() {
    let limits = Limits { max_pages: 2, ..Limits::default() };
    let mut objects = vec![obj("<< /Type /Catalog /Pages 2 0 R >>"), obj("<< /Type /Pages /Kids [3 0 R 4 0 R 5 0 R] /Count 3 >>")];
    for _ in 0..3 {
        objects.push(obj("<< /Type /Page /Parent 2 0 R /MediaBox [0 0 10 10] /Contents 6 0 R >>"));
    }
    objects.push(stream("", b""));
    let e = extract(&pdf(&objects, ""), "pages.pdf", &limits).unwrap_err();
    assert!(matches!(&e, ExtractError::TooLarge { what, .. } if what.contains("pages")), "{e}");
}

// --- Hostile text formats --------------------------------------------------------------

#[test]
fn deeply_nested_html_and_markdown_do_not_overflow_the_stack() {
    // html2text's time grows with the square of the depth: refused past 512.
    for (open, close) in [("<div>", "</div>"), ("<div/>", ""), ("<b><i>", "</i></b>")] {
        let html = format!("<html><body>{}deep text{}</body></html>", open.repeat(100_000), close.repeat(100_000));
        let e = err(html.as_bytes(), "deep.html");
        assert!(matches!(&e, ExtractError::Malformed { detail, .. } if detail.contains("nested")), "{open}: {e}");
    }
    let html = format!("<html><body>{}deep text{}</body></html>", "<div>".repeat(400), "</div>".repeat(400));
    assert!(ok(html.as_bytes(), "ok.html").text.contains("deep text"));
    let svg = format!("<html><body><svg>{}</svg><p>after the drawing</p></body></html>", "<path d='M0 0'/>".repeat(10_000));
    assert!(ok(svg.as_bytes(), "svg.html").text.contains("after the drawing"));
    let quotes = format!("{} deep quote\n", ">".repeat(50_000));
    let doc = ok(quotes.as_bytes(), "deep.md");
    assert!(doc.text.contains("deep quote"));
    let lists = (0..1_000).map(|i| format!("{}- item {i}\n", "  ".repeat(i))).collect::<String>();
    let doc = ok(lists.as_bytes(), "lists.md");
    assert!(doc.text.contains("item 999"));
}

#[test]
fn error_codes_are_stable_and_messages_name_the_file() {
    let cases: Vec<(ExtractError, &str, u16)> = vec![
        (ExtractError::TooLarge { name: "a".into(), what: "x", actual: "2".into(), limit: 1 }, "file_too_large", 413),
        (ExtractError::Unsupported { name: "a".into(), detected: "application/zip".into() }, "unsupported_file_type", 415),
        (ExtractError::Binary { name: "a".into(), reason: "r".into() }, "binary_content", 415),
        (ExtractError::NotUtf8 { name: "a".into(), offset: 0 }, "not_utf8", 422),
        (ExtractError::Encrypted { name: "a".into() }, "encrypted_pdf", 422),
        (ExtractError::Malformed { name: "a".into(), kind: "PDF", detail: "d".into() }, "malformed_file", 422),
        (ExtractError::NoText { name: "a".into() }, "no_text", 422),
    ];
    for (e, code, status) in cases {
        assert_eq!((e.code(), e.http_status()), (code, status), "{e}");
        assert!(e.to_string().starts_with("a: "), "{e}");
    }
}
