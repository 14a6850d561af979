//! The mail port's behaviour suite: every case runs against the outbox files and against a real
//! SMTP server (aiosmtpd; skipped loudly without python3 or aiosmtpd, a failure with
//! `MERCATO_REQUIRE_SERVICES=1`), and reads what arrived with a mail parser.

/// Declares each case once per adapter: `file::<case>` and `smtp::<case>`.
macro_rules! mail_suite {
    ($($case:ident),* $(,)?) => {
        mod file {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::cases::$case(mail::testing::TestMailer::file()).await;
                }
            )*
        }
        mod smtp {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let test_name = concat!("suite::smtp::", stringify!($case));
                    let Some(test_mailer) = mail::testing::TestMailer::smtp(test_name).await else {
                        return;
                    };
                    super::cases::$case(test_mailer).await;
                }
            )*
        }
    };
}

mail_suite!(
    a_plain_text_mail_arrives_once_with_its_sender_recipient_subject_and_body,
    a_mail_with_html_arrives_as_multipart_alternative_with_both_parts,
    mails_sent_concurrently_all_arrive_each_once,
    an_invalid_recipient_address_is_refused_before_anything_is_sent,
    a_line_break_in_a_display_name_or_subject_is_refused_before_anything_is_sent,
    lone_dots_long_lines_and_non_ascii_text_arrive_unchanged,
    a_mail_to_an_internationalized_address_arrives,
);

mod cases {
    use std::collections::BTreeSet;

    use mail::testing::TestMailer;
    use mail::{Mail, MailError, Recipient};

    use crate::support::read_mail;

    fn sender() -> (Option<String>, String) {
        (
            Some("mercato".to_owned()),
            "shop@mercato.example".to_owned(),
        )
    }

    pub async fn a_plain_text_mail_arrives_once_with_its_sender_recipient_subject_and_body(
        test_mailer: TestMailer,
    ) {
        let text = "Hallo Zoë,\n\nbitte bestätige deine Adresse:\nhttps://shop.example/verify?token=4f1c\n";
        let mail = Mail::text(
            Recipient::named("Zoë Ünal", "zoe@example.com"),
            "Willkommen bei mercato – bitte bestätigen ✓",
            text,
        );
        test_mailer
            .mailer
            .send(&mail)
            .await
            .expect("the mail is sent");

        let messages = test_mailer.messages().await;
        assert_eq!(messages.len(), 1, "one mail arrives");
        let read = read_mail(&messages[0]);
        assert_eq!(read.from, vec![sender()]);
        assert_eq!(
            read.to,
            vec![(Some("Zoë Ünal".to_owned()), "zoe@example.com".to_owned())]
        );
        assert_eq!(
            read.subject.as_deref(),
            Some("Willkommen bei mercato – bitte bestätigen ✓")
        );
        assert_eq!(read.content_type, "text/plain");
        assert_eq!(read.parts, vec![("text/plain".to_owned(), text.to_owned())]);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970")
            .as_secs();
        let date = read.date.expect("a Date header");
        assert!(date.abs_diff(now as i64) < 300, "dated {date}, now {now}");
        let message_id = read.message_id.expect("a Message-ID header");
        assert!(message_id.ends_with("@mercato.example"), "{message_id}");
    }

    pub async fn a_mail_with_html_arrives_as_multipart_alternative_with_both_parts(
        test_mailer: TestMailer,
    ) {
        let text = "Reset your password: https://shop.example/reset?token=9a2e\n";
        let html = "<p>Reset your password: <a href=\"https://shop.example/reset?token=9a2e\">reset</a></p>\n";
        let mail = Mail::text(
            Recipient::new("zoe@example.com"),
            "Reset your password",
            text,
        )
        .with_html(html);
        test_mailer
            .mailer
            .send(&mail)
            .await
            .expect("the mail is sent");

        let messages = test_mailer.messages().await;
        assert_eq!(messages.len(), 1, "one mail arrives");
        let read = read_mail(&messages[0]);
        assert_eq!(read.content_type, "multipart/alternative");
        assert_eq!(
            read.parts,
            vec![
                ("text/plain".to_owned(), text.to_owned()),
                ("text/html".to_owned(), html.to_owned()),
            ]
        );
        assert_eq!(read.to, vec![(None, "zoe@example.com".to_owned())]);
        assert_eq!(read.subject.as_deref(), Some("Reset your password"));
    }

    pub async fn mails_sent_concurrently_all_arrive_each_once(test_mailer: TestMailer) {
        const N_MAILS: usize = 24;
        let mut sends = tokio::task::JoinSet::new();
        for mail_idx in 0..N_MAILS {
            let mailer = test_mailer.mailer.clone();
            sends.spawn(async move {
                let mail = Mail::text(
                    Recipient::new(format!("customer-{mail_idx}@example.com")),
                    format!("mail {mail_idx}"),
                    format!("body of mail {mail_idx}\n"),
                );
                mailer.send(&mail).await
            });
        }
        while let Some(sent) = sends.join_next().await {
            sent.expect("the sending task").expect("the mail is sent");
        }

        let messages = test_mailer.messages().await;
        assert_eq!(messages.len(), N_MAILS, "each mail arrives once");
        let mut subjects = BTreeSet::new();
        let mut message_ids = BTreeSet::new();
        for message in &messages {
            let read = read_mail(message);
            let subject = read.subject.expect("a subject");
            let mail_idx = subject.strip_prefix("mail ").expect("a numbered subject");
            assert_eq!(
                read.to,
                vec![(None, format!("customer-{mail_idx}@example.com"))]
            );
            assert_eq!(
                read.parts,
                vec![(
                    "text/plain".to_owned(),
                    format!("body of mail {mail_idx}\n")
                )]
            );
            assert!(subjects.insert(subject.clone()), "{subject} arrived twice");
            assert!(message_ids.insert(read.message_id.expect("a Message-ID")));
        }
        let expected: BTreeSet<String> = (0..N_MAILS).map(|idx| format!("mail {idx}")).collect();
        assert_eq!(subjects, expected);
    }

    pub async fn an_invalid_recipient_address_is_refused_before_anything_is_sent(
        test_mailer: TestMailer,
    ) {
        for address in [
            "",
            "zoe",
            "zoe@",
            "@example.com",
            "zoe@exa mple.com",
            "zoe@example..com",
            "Zoë Ünal <zoe@example.com>",
            "zoe@example.com, eve@example.com",
        ] {
            let mail = Mail::text(Recipient::new(address), "Welcome", "Hello");
            let error = test_mailer.mailer.send(&mail).await.expect_err(address);
            match &error {
                MailError::InvalidRecipient { address: named, .. } => {
                    assert_eq!(named, address);
                }
                other => panic!("{address:?}: {other}"),
            }
            assert!(error.is_permanent(), "{error}");
            assert!(error.to_string().contains(address), "{error}");
        }
        assert!(test_mailer.messages().await.is_empty(), "nothing was sent");
    }

    pub async fn a_line_break_in_a_display_name_or_subject_is_refused_before_anything_is_sent(
        test_mailer: TestMailer,
    ) {
        let named = Mail::text(
            Recipient::named("Zoë\r\nBcc: eve@example.com", "zoe@example.com"),
            "Welcome",
            "Hello",
        );
        let error = test_mailer.mailer.send(&named).await.expect_err("a name");
        assert!(
            matches!(error, MailError::InvalidRecipient { .. }),
            "{error}"
        );
        let subject = Mail::text(
            Recipient::new("zoe@example.com"),
            "Welcome\nBcc: eve@example.com",
            "Hello",
        );
        let error = test_mailer
            .mailer
            .send(&subject)
            .await
            .expect_err("a subject");
        assert!(matches!(error, MailError::InvalidMail(_)), "{error}");
        assert!(error.is_permanent());
        assert!(test_mailer.messages().await.is_empty(), "nothing was sent");
    }

    pub async fn lone_dots_long_lines_and_non_ascii_text_arrive_unchanged(test_mailer: TestMailer) {
        let long_line = "0123456789".repeat(200);
        let text = format!(
            ".\nfirst\n.\n..\n.leading dot\nFrom the start of a line\n{long_line}\nünïcödé ✓ 日本語 🛒\n\n  indented\ttab\n"
        );
        let html = format!("<p>{long_line}</p>\n<p>.</p>\n.\n<p>日本語 🛒</p>");
        let mail = Mail::text(Recipient::new("zoe@example.com"), ".", text.as_str())
            .with_html(html.as_str());
        test_mailer
            .mailer
            .send(&mail)
            .await
            .expect("the mail is sent");

        let messages = test_mailer.messages().await;
        assert_eq!(messages.len(), 1, "one mail arrives");
        for line in messages[0].split(|byte| *byte == b'\n') {
            assert!(line.len() <= 1000, "a line longer than SMTP allows");
        }
        let read = read_mail(&messages[0]);
        assert_eq!(read.subject.as_deref(), Some("."));
        assert_eq!(
            read.parts,
            vec![
                ("text/plain".to_owned(), text),
                ("text/html".to_owned(), html)
            ]
        );
    }

    pub async fn a_mail_to_an_internationalized_address_arrives(test_mailer: TestMailer) {
        let mail = Mail::text(
            Recipient::named("Zoë", "zoë@bücher.example"),
            "Welcome",
            "Hello\n",
        );
        test_mailer
            .mailer
            .send(&mail)
            .await
            .expect("the mail is sent");

        let messages = test_mailer.messages().await;
        assert_eq!(messages.len(), 1, "one mail arrives");
        let read = read_mail(&messages[0]);
        let (name, address) = read.to.first().cloned().expect("a To address");
        assert_eq!(name.as_deref(), Some("Zoë"));
        assert!(
            address == "zoë@bücher.example" || address == "zoë@xn--bcher-kva.example",
            "{address}"
        );
    }
}
