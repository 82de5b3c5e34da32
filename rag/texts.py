"""Every sentence a student (or the staff running the chat) reads, in one file for whoever edits or translates them.

Code imports these names. ``{}`` and ``{name}`` are filled in with ``str.format``:
keep them when editing a sentence. Sentences shown in both languages are
written "Vietnamese / English".

Out of scope: the model's system prompt (``rag.prompt``: the model reads it,
and adapters are trained on it), the citation label's format (``rag.render``),
and the English error messages of the command line and the APIs, which sit
with the check that raises them.
"""

from __future__ import annotations

# -- answers (every entry point) ----------------------------------------------------------------------

REFUSAL = "Không tìm thấy quy định liên quan trong tài liệu."
SOURCES_HEADING = "Nguồn:"
UNSUPPORTED_NOTE = "(không có trong tài liệu được truy xuất: {})"  # the Điều an answer named that were not retrieved


# why a question was refused (rag.retrieve.Retrieval.reason), and what the documents cover nearest it
REFUSAL_REASONS = {
    "no_match": "Các văn bản đã lập chỉ mục không có đoạn nào nói về nội dung này.",
    "unknown_words": "Câu hỏi có từ mà các văn bản không hề nhắc tới: {words}.",
    "other_institution": "Câu hỏi nói về {what}, còn các văn bản là quy định của {issuer}.",
    "other_year": "Câu hỏi nói về năm {year}, các văn bản chỉ có quy định của {years}.",
    "cheating": "Đây là yêu cầu giúp gian lận hoặc làm sai quy chế, trợ lý không hỗ trợ.",
    "other_cohort": "Câu hỏi nói về {cohort}, các văn bản chỉ nhắc tới {cohorts}.",
    "unstated_fact": "Câu hỏi hỏi {what}, nhưng các đoạn gần nhất trong văn bản không nêu {what} nào cho nội dung này.",
    "no_words": "Câu hỏi không có từ nào để tìm (chỉ có số hoặc ký hiệu).",
    "no_diacritics": ("Câu hỏi được gõ không dấu, còn các văn bản viết tiếng Việt có dấu nên không tìm được: "
                      "hãy gõ lại có dấu (ví dụ «học phí» thay vì «hoc phi»)."),
}
FACT_KINDS = {"money": "số tiền", "clock": "giờ cụ thể", "month": "tháng cụ thể"}  # what a question asked for
REFUSAL_SUGGEST = "Các quy định gần nhất với câu hỏi:"
ANSWER_LEAD = "Theo tài liệu:"  # the extractive answer's first line
DEMO_NOTICE = ("(Lưu ý: chưa cấu hình tài liệu nào, nên câu trả lời lấy từ bộ quy chế mẫu của một trường hư cấu, "
               "Trường Đại học Công nghệ Sông Hồng. Lập chỉ mục quy chế của trường bạn bằng `rag ingest THƯ_MỤC "
               "--index THƯ_MỤC_INDEX` rồi đặt RAG_INDEX_DIR.)")
CHAT_RESET = "Đã xóa lịch sử hội thoại: câu hỏi tiếp theo được hiểu độc lập."
CHAT_QUERY_USED = "(đã tìm với câu hỏi: {})"
FULL_TEXT_HEADING = "── Toàn văn: {} ──"


def is_refusal(text: str) -> bool:
    """Whether an answer's text is the refusal (a model may leave out the full stop), or empty."""
    text = text.strip()
    return not text or text.startswith(REFUSAL.rstrip("."))


# -- `rag chat` ------------------------------------------------------------------------------------------

CHAT_GREETING = "Hỏi về quy chế (gõ /exit để thoát, /reset để bắt đầu lại)."
CHAT_HELP = ("Lệnh: /reset — bắt đầu lại (quên các câu trước), /help — các lệnh này, /exit — thoát. "
             "Mọi dòng khác là một câu hỏi về quy chế.")
CHAT_UNKNOWN_COMMAND = "Không có lệnh {}. {}"

# -- the web chat: page --------------------------------------------------------------------------------

UI_TITLE = "Hỏi đáp quy chế"
UI_INTRO = "Câu trả lời trích dẫn Điều/Khoản của quy chế; nếu tài liệu không nói tới, bot trả lời «không tìm thấy»."
UI_TAB_CHAT = "Hỏi đáp"
UI_TAB_INDEX = "Chỉ mục"
UI_CHATBOT = "Trò chuyện"
UI_QUESTION_PLACEHOLDER = "Nhập câu hỏi về quy chế rồi nhấn Enter…"
UI_SEND = "Gửi"
UI_STOP = "Dừng"
UI_NEW_CHAT = "Cuộc trò chuyện mới"
UI_EXAMPLES = "Câu hỏi mẫu"
UI_OPTIONS = "Tùy chọn"
UI_ANSWER_FROM = "Trả lời từ"
UI_TOP_K = "Số đoạn truy xuất (top_k)"
UI_TEMPERATURE = "Nhiệt độ (temperature)"
UI_TEMPERATURE_INFO = "0 = ổn định nhất; chỉ có tác dụng khi trả lời bằng LLM."
UI_MAX_NEW_TOKENS = "Số token tối đa (max_new_tokens)"
UI_MAX_NEW_TOKENS_INFO = "Chỉ có tác dụng khi trả lời bằng LLM."
UI_UPLOAD = "Tải tệp lên ({types}; tối đa {max_mb:g} MB mỗi tệp)"
UI_INGEST = "Nạp vào chỉ mục làm việc"
UI_PROGRESS = "Tiến trình"

# -- the web chat: conversation ------------------------------------------------------------------------

WORK_CHOICE = "Chỉ mục làm việc (tệp tải lên, trên máy này)"
LOCAL_BACKEND = "Máy này — {mode}"
LOCAL_EXTRACTIVE = "trích dẫn (extractive)"
FALLBACK_EXAMPLES = (
    "Điều kiện để được công nhận tốt nghiệp là gì?",
    "Sinh viên bị cảnh báo học tập trong trường hợp nào?",
    "Học bổng khuyến khích học tập được xét như thế nào?",
)
EXAMPLE_QUESTION = "Quy định về {topic} như thế nào?"  # topic: an article's title, first letter lower-cased
STOPPED = "(Đã dừng. / Stopped.)"
ERROR_MARK = "⚠️ "
WORK_INDEX_EMPTY_ERROR = ("Chỉ mục làm việc còn trống: hãy tải tệp lên ở thẻ «Chỉ mục» trước. / "
                          "The working index is empty: upload a file in the «Chỉ mục» tab first.")

# -- the web chat: sources panel -----------------------------------------------------------------------

SOURCES_PLACEHOLDER = "Nguồn của câu trả lời sẽ hiện ở đây."
SOURCES_PENDING = "Đang tìm trong tài liệu…"
PANEL_SOURCES = "Nguồn ({})"
PANEL_REFUSAL_HINT = ("Không có đoạn nào trong tài liệu đủ liên quan để trả lời. Hãy hỏi cụ thể hơn (tên quy chế, "
                      "học kỳ, loại học bổng…) hoặc kiểm tra ở thẻ «Chỉ mục» xem tài liệu đã được nạp chưa.")
PANEL_NEAREST = "Các đoạn gần nhất, không đủ liên quan ({})"
PANEL_OTHERS = "Các đoạn khác được truy xuất ({})"
PANEL_UNSUPPORTED = ("Câu trả lời nhắc tới {} nhưng không có trong các đoạn được truy xuất — "
                     "hãy đối chiếu với văn bản gốc.")
PANEL_NO_PASSAGE = "(Máy chủ không gửi kèm đoạn trích.)"
PANEL_DOCUMENT = "Tài liệu: {}"
PANEL_FILE = "Tệp: {}"
PANEL_PAGE = "Trang: {}"
PANEL_SCORE = "Điểm truy xuất: {:.4f}"
PANEL_ERROR = "Không trả lời được."
INPUT_ERROR = "Câu hỏi hoặc thiết lập chưa hợp lệ, hãy sửa rồi gửi lại"  # then the English reason
FOOTER_TIMINGS = {  # by Answer.timings key
    "retrieve_ms": "truy xuất {:.0f} ms",
    "first_token_ms": "token đầu {:.0f} ms",
    "total_ms": "tổng {:.0f} ms",
}
FOOTER_TOKENS = "token vào/ra {}/{}"
FOOTER_MODES = {"extractive": "chế độ trích dẫn", "llm": "chế độ LLM", "remote": "trả lời từ máy chủ từ xa"}
FOOTER_MODE = "chế độ {}"  # a mode not in FOOTER_MODES

# -- the web chat: index tab and uploads ---------------------------------------------------------------

INDEX_IN_USE = "Chỉ mục đang dùng để trả lời"
INDEX_LOCAL_COPY = "Bản sao chỉ mục trên máy này"
INDEX_NONE = "Không có chỉ mục trên máy này."
INDEX_REMOTE = "Câu trả lời đến từ {}; chỉ mục của nó nằm trên máy chủ đó."
INDEX_SUMMARY = "{documents} tài liệu · {pages} trang · {chunks} đoạn · mô hình nhúng {model} ({dimension} chiều)"
INDEX_BUILT = "Xây dựng: {created} · cập nhật: {updated} · vị trí: {location}"
INDEX_COLUMNS = ("Tài liệu", "Tệp", "Loại", "Trang", "Đoạn", "Trang OCR")
WORK_INDEX = "Chỉ mục làm việc (tệp tải lên)"
WORK_INDEX_EMPTY = "Chỉ mục làm việc còn trống: tải tệp lên để thử hỏi đáp trên tài liệu mới mà không đụng tới chỉ mục chính."
UPLOAD_NONE = "Chưa chọn tệp nào."
UPLOAD_BAD_TYPE = "✗ {name}: loại tệp không được hỗ trợ (chỉ nhận {types})."
UPLOAD_TOO_LARGE = "✗ {name}: {size_mb:.1f} MB, vượt giới hạn {limit:g} MB mỗi tệp ({setting})."
UPLOAD_PARTLY = "⚠ {step}: chỉ đọc được một phần: {note}"
UPLOAD_LOADING = "Đang nạp {}"
UPLOAD_READING = "… đang đọc, chia đoạn và nhúng {}"
UPLOAD_FAILED = "✗ {step}: {reason}"
UPLOAD_STATUS = {"added": "đã thêm", "updated": "đã cập nhật", "unchanged": "không đổi"}
UPLOAD_DONE_FILE = "✓ {step}: {status} — {pages} trang, {chunks} đoạn."
UPLOAD_FINISHED = "Xong"
UPLOAD_DONE = "Xong. Chọn «{}» trong «Tùy chọn» của thẻ Hỏi đáp để hỏi trên các tệp này."

# -- the web chat: remote backends (Replicate, RunPod) -------------------------------------------------

REMOTE_THING = {"model": "mô hình", "endpoint": "endpoint"}  # what="model" | "endpoint", in Vietnamese
REMOTE_ERRORS = {
    "timeout": "{service} không trả lời trong {seconds:g} giây; hãy thử lại sau. / "
               "{service} did not answer within {seconds:g} s; try again later.",
    "remote": "{service} báo lỗi khi trả lời: {detail} / {service} reported an error while answering: {detail}",
    "key": "{service} từ chối khóa truy cập (HTTP {status}): kiểm tra biến {token_env}. / "
           "{service} rejected the API key (HTTP {status}): check {token_env}.",
    "not_found": "{service} không tìm thấy {thing_vi} này (HTTP 404): kiểm tra tên {thing_vi}. / "
                 "{service} does not know this {thing} (HTTP 404): check its name.",
    "rejected": "{service} từ chối dữ liệu gửi đi (HTTP {status}){detail}. / "
                "{service} rejected the request (HTTP {status}){detail}.",
    "billing": "Tài khoản {service} cần nạp thêm tiền (HTTP 402). / The {service} account needs billing (HTTP 402).",
    "rate_limited": "{service} đang giới hạn số yêu cầu (HTTP 429); hãy thử lại sau ít phút. / "
                    "{service} is rate-limiting requests (HTTP 429); try again in a few minutes.",
    "server": "{service} đang gặp sự cố (HTTP {status}); hãy thử lại sau. / "
              "{service} had a server error (HTTP {status}); try again later.",
    "network": "Không kết nối được tới {service}: kiểm tra mạng của máy chạy giao diện. / "
               "Could not reach {service}: check this machine's network connection.",
    "http": "{service} trả về lỗi HTTP {status}. / {service} returned HTTP {status}.",
    "unexpected": "Lỗi không mong đợi khi gọi {service} ({error}). / Unexpected error calling {service} ({error}).",
}
