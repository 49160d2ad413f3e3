"""Vietnamese first, English on request.

The Vietnamese text is the message id (as with gettext's msgid), so templates read naturally
and a missing English entry falls back to correct Vietnamese rather than a key. A test checks
that every string the templates and scripts ask for has an English entry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from fastapi import Request

from loa.timeutil import format_date, format_datetime, ms_to_dt

LANG_COOKIE = "loa_lang"
LANGUAGES = ("vi", "en")
DEFAULT_LANGUAGE = "vi"

STATE_LABELS = {
    "online": "Hoạt động",
    "degraded": "Suy giảm",
    "offline": "Mất kết nối",
    "unknown": "Chưa rõ",
}
REASON_LABELS = {
    "amp_fault": "Lỗi bộ khuếch đại",
    "amp_off": "Bộ khuếch đại tắt",
    "speaker_line": "Lỗi đường dây loa",
    "battery_low": "Pin yếu",
    "weak_signal": "Sóng yếu",
    "heartbeat_timeout": "Quá hạn nhịp tim",
    "will_lost": "Mất kết nối đột ngột",
    "status_shutdown": "Tắt máy",
    "lost": "Mất kết nối đột ngột",
    "shutdown": "Tắt máy",
    "status_offline": "Báo ngoại tuyến",
    "status_online": "Kết nối lại",
    "heartbeat": "Nhịp tim",
    "offline": "Mất kết nối",
    "recovered": "Phục hồi",
}
ROLE_LABELS = {"commune": "Cán bộ xã", "technician": "Kỹ thuật viên", "province": "Quản trị tỉnh"}
# A node's events (docs/protocol.md), as a technician reads them on the node page.
EVENT_LABELS = {
    "cmd_ack": "Xác nhận lệnh",
    "playback": "Phát bản tin",
    "fault": "Sự cố",
    "selftest": "Tự kiểm tra",
}
PHASE_LABELS = {
    "fetched": "Đã tải về",
    "started": "Bắt đầu phát",
    "finished": "Phát xong",
    "preempted": "Nhường bản tin ưu tiên hơn",
    "failed": "Phát lỗi",
}
FAULT_LABELS = {
    "amp_fault": "Lỗi bộ khuếch đại",
    "speaker_line": "Lỗi đường dây loa",
    "power_lost": "Mất điện lưới",
    "power_restored": "Có điện lưới trở lại",
    "tamper": "Thiết bị bị mở vỏ",
    "storage": "Lỗi bộ nhớ",
    "clock": "Đồng hồ chưa đồng bộ",
    "audio_output": "Lỗi đầu ra âm thanh",
}
# Heartbeat values (docs/protocol.md) as words, never the wire codes.
VALUE_LABELS = {
    "amp": {"ok": "Bình thường", "fault": "Hỏng", "off": "Tắt"},
    "power": {"mains": "Điện lưới", "battery": "Pin", "solar": "Năng lượng mặt trời"},
    "net": {"4g": "Di động 4G", "3g": "Di động 3G", "eth": "Cáp mạng", "wifi": "Wi-Fi"},
}
# What a node writes as a playback or command error, in words ("stream" = the live stream).
ERROR_LABELS = {
    "stream": "không nhận được luồng phát trực tiếp",
    "download": "không tải được tệp âm thanh",
    "sha256 mismatch": "tệp tải về bị hỏng (sai mã kiểm tra)",
    "expired": "lệnh đã quá hạn",
    "busy": "đang phát bản tin khác",
    "lost": "mất kết nối đột ngột",
    "shutdown": "tắt máy",
}
_WIRE_ID = re.compile(r"b(\d+)-a(\d+)")

EN: dict[str, str] = {
    # layout and navigation
    "Loa — Đài truyền thanh IP": "Loa — IP radio network",
    "Kỹ thuật": "Technician",
    "Xã": "Commune",
    "Tỉnh": "Province",
    "Tài khoản": "Accounts",
    "Cảnh báo": "Alarms",
    "Đăng xuất": "Log out",
    "Ngôn ngữ": "Language",
    "Chuyển ngôn ngữ": "Switch language",
    "Bỏ qua tới nội dung": "Skip to content",
    # login
    "Đăng nhập": "Log in",
    "Tên đăng nhập": "Username",
    "Mật khẩu": "Password",
    "Sai tên đăng nhập hoặc mật khẩu": "Wrong username or password",
    "Tài khoản đã bị khóa. Hãy liên hệ quản trị tỉnh.": (
        "This account is disabled. Contact the province administrator."
    ),
    "Đăng nhập sai quá nhiều lần. Vui lòng thử lại sau {minutes} phút.": (
        "Too many failed logins. Try again in {minutes} minutes."
    ),
    "Phiên đăng nhập đã hết hạn, hãy tải lại trang.": "The login form expired; reload the page.",
    "Hãy nhập tên đăng nhập và mật khẩu": "Enter your username and password",
    "Điều khiển và giám sát đài truyền thanh IP cấp xã": (
        "Control and monitoring of commune IP radio stations"
    ),
    # states and reasons
    "Hoạt động": "Online",
    "Suy giảm": "Degraded",
    "Mất kết nối": "Offline",
    "Chưa rõ": "Unknown",
    "Tổng": "Total",
    "Lỗi bộ khuếch đại": "Amplifier fault",
    "Bộ khuếch đại tắt": "Amplifier off",
    "Lỗi đường dây loa": "Speaker line fault",
    "Pin yếu": "Battery low",
    "Sóng yếu": "Weak signal",
    "Đang chạy pin": "On battery",
    "Quá hạn nhịp tim": "Heartbeat overdue",
    "Mất kết nối đột ngột": "Connection lost (will)",
    "Tắt máy": "Shut down",
    "Báo ngoại tuyến": "Reported offline",
    "Kết nối lại": "Reconnected",
    "Nhịp tim": "Heartbeat",
    "Phục hồi": "Recovered",
    # technician page
    "Giám sát cụm loa": "Cluster monitoring",
    "Tìm kiếm": "Search",
    "Tìm theo mã, thôn, xã (không cần dấu)": "Search by id, village, commune (no accents needed)",
    "Trạng thái": "State",
    "Tất cả": "All",
    "Tất cả các xã": "All communes",
    "Lọc": "Filter",
    "Mã cụm": "Cluster id",
    "Tên": "Name",
    "Thôn": "Village",
    "Lý do": "Reason",
    "Tin nhắn cuối": "Last heartbeat",
    "Từ lúc": "Since",
    "Trang trước": "Previous page",
    "Trang sau": "Next page",
    "Không có cụm loa nào khớp.": "No cluster matches.",
    "Trực tiếp": "Live",
    "Mất kết nối trực tiếp, đang thử lại…": "Live link lost, retrying…",
    "Đang tải…": "Loading…",
    "Cảnh báo đang mở": "Open alarms",
    "Không có cảnh báo nào.": "No alarms.",
    "Xác nhận": "Acknowledge",
    "Đã xác nhận": "Acknowledged",
    "Loại": "Kind",
    "Cụm loa": "Cluster",
    "Chi tiết": "Detail",
    "Thời điểm": "Time",
    "Đã hết": "Cleared",
    "Người xác nhận": "Acknowledged by",
    "Dao động": "Flaps",
    "Cụm lạ chờ duyệt": "Unknown clusters awaiting approval",
    "Không có cụm lạ nào.": "No unknown clusters.",
    "Duyệt": "Approve",
    "Lần đầu": "First seen",
    "Lần cuối": "Last seen",
    "Số tin": "Messages",
    "Chọn thôn": "Choose a village",
    "Đã duyệt": "Approved",
    "Xem tất cả cảnh báo": "See all alarms",
    "Đang mở": "Open",
    "Lỗi": "Error",
    "Trang {page}/{pages}": "Page {page}/{pages}",
    "{n} cụm": "{n} clusters",
    # node page
    "Cụm loa {id}": "Cluster {id}",
    "Thông tin": "Information",
    "Phiên bản": "Firmware",
    "Âm lượng": "Volume",
    "Nguồn": "Power",
    "Mạng": "Network",
    "Tín hiệu": "Signal",
    "Nhiệt độ": "Temperature",
    "Pin": "Battery",
    "Loa": "Speakers",
    "Bộ khuếch đại": "Amplifier",
    "Thao tác": "Actions",
    "Đặt âm lượng": "Set volume",
    "Tự kiểm tra": "Self-test",
    "Dừng phát": "Stop playback",
    "Đã gửi lệnh tới cụm loa.": "Command sent to the cluster.",
    # node events
    "Xác nhận lệnh": "Command answer",
    "Phát bản tin": "Playback",
    "Sự cố": "Fault",
    "Đã tải về": "Downloaded",
    "Bắt đầu phát": "Started",
    "Phát xong": "Finished",
    "Nhường bản tin ưu tiên hơn": "Pre-empted by a higher priority",
    "Phát lỗi": "Playback failed",
    "Mất điện lưới": "Mains power lost",
    "Có điện lưới trở lại": "Mains power restored",
    "Thiết bị bị mở vỏ": "Enclosure opened",
    "Lỗi bộ nhớ": "Storage fault",
    "Đã thực hiện lệnh": "Command carried out",
    "Đồng hồ chưa đồng bộ": "Clock not synchronised",
    "Lỗi đầu ra âm thanh": "Audio output fault",
    "Từ chối lệnh: {error}": "Command refused: {error}",
    "Đạt: {ok}/{total} loa hoạt động": "Passed: {ok}/{total} speakers working",
    "Không đạt: {ok}/{total} loa hoạt động": "Failed: {ok}/{total} speakers working",
    "Cụm loa đã nhận và thực hiện lệnh.": "The cluster took the command and carried it out.",
    "Đã gửi lệnh nhưng cụm loa chưa phản hồi. Broker giữ lệnh và giao khi cụm loa kết nối lại.": (
        "Command sent, but the cluster has not answered. The broker keeps the command and "
        "delivers it when the cluster reconnects."
    ),
    "Cụm loa từ chối lệnh; xem lý do trong mục Sự kiện gần đây.": (
        "The cluster refused the command; see the reason under Recent events."
    ),
    "Tự kiểm tra đạt: {ok}/{total} loa hoạt động.": (
        "Self-test passed: {ok}/{total} speakers working."
    ),
    "Tự kiểm tra không đạt: {ok}/{total} loa hoạt động.": (
        "Self-test failed: {ok}/{total} speakers working."
    ),
    "Độ sẵn sàng": "Availability",
    "Lịch sử trạng thái": "State history",
    "Cường độ tín hiệu (dBm)": "Signal strength (dBm)",
    "Nhiệt độ (°C)": "Temperature (°C)",
    "Điện áp pin (V)": "Battery voltage (V)",
    "Chưa có dữ liệu.": "No data yet.",
    "24 giờ": "24 hours",
    "7 ngày": "7 days",
    "30 ngày": "30 days",
    "Sẵn sàng {pct}% thời gian": "Available {pct}% of the time",
    "Từ": "From",
    "Đến": "To",
    "Nguyên nhân": "Cause",
    "Sự kiện gần đây": "Recent events",
    "Quay lại": "Back",
    "Lệch đồng hồ": "Clock skew",
    "Chu kỳ nhịp tim": "Heartbeat interval",
    "Không tìm thấy cụm loa": "Cluster not found",
    "Khoảng thời gian": "Period",
    # admin
    "Quản lý tài khoản": "User accounts",
    "Tạo tài khoản": "Create account",
    "Vai trò": "Role",
    "Các xã": "Communes",
    "Tên hiển thị": "Display name",
    "Đang dùng": "Active",
    "Đã khóa": "Disabled",
    "Khóa": "Disable",
    "Mở khóa": "Enable",
    "Đặt lại mật khẩu": "Reset password",
    "Mật khẩu mới": "New password",
    "Lưu": "Save",
    "Cán bộ xã": "Commune officer",
    "Kỹ thuật viên": "Technician",
    "Quản trị tỉnh": "Province admin",
    "Toàn tỉnh": "Whole province",
    "Mã xã, cách nhau bởi dấu phẩy": "Commune codes, comma separated",
    "Đã lưu.": "Saved.",
    "Nhật ký thao tác": "Audit log",
    "Người dùng": "User",
    "Hành động": "Action",
    "Đối tượng": "Target",
    "Địa chỉ IP": "IP address",
    "Kết quả": "Result",
    "Đổi vai trò và xã": "Change role and communes",
    "Ngày tạo": "Created",
    # commune officer
    "Đài truyền thanh xã": "Commune station",
    "Lịch phát hôm nay": "Today's schedule",
    "Lịch phát trong tuần": "This week's schedule",
    "Soạn bản tin": "Compose a bulletin",
    "Tiêu đề": "Title",
    "Nội dung": "Text",
    "Nghe thử": "Listen",
    "Cách đọc": "Spoken form",
    "Phát tới": "Play to",
    "Toàn xã": "Whole commune",
    "Giờ phát": "Start time",
    "Lặp lại": "Repeat",
    "Không lặp": "Once",
    "Hằng ngày": "Daily",
    "Các ngày trong tuần (T2-T6)": "Weekdays (Mon-Fri)",
    "Gửi": "Submit",
    "Tải âm thanh lên": "Upload audio",
    "Chọn tệp": "Choose a file",
    "Tải lên": "Upload",
    "Đã tải lên": "Uploaded",
    "Hộp thư của tỉnh": "Province inbox",
    "Không có bản tin nào.": "No bulletins.",
    "Phát trực tiếp": "Live broadcast",
    "Bắt đầu phát trực tiếp": "Start live broadcast",
    "Kết quả phát": "Broadcast results",
    "Đã phát": "Played",
    "Không phát": "Not played",
    "Chưa tới giờ": "Not yet due",
    "Mức ưu tiên": "Priority",
    "Thường": "Normal",
    "Ưu tiên": "Priority",
    "Khẩn cấp": "Emergency",
    "Ngôn ngữ phát": "Broadcast language",
    "Tiếng Việt": "Vietnamese",
    "Tày": "Tày",
    "Nùng": "Nùng",
    "Dao": "Dao",
    "Chức năng này chưa sẵn sàng trên máy chủ.": "This feature is not available on the server yet.",
    "Đã gửi.": "Submitted.",
    "Lên lịch": "Schedule",
    "Dùng bản tin": "Use bulletin",
    "Luồng phát (URL)": "Stream URL",
    "Trạng thái bản tin": "Status",
    "Không có lịch phát.": "Nothing scheduled.",
    "Lý do không phát": "Why not played",
    "Thời lượng": "Duration",
    # province
    "Chỉ tiêu 8.3 theo xã": "Indicator 8.3 by commune",
    "Đạt": "Pass",
    "Đài truyền thanh và loa đến thôn, theo xã": "Radio station and loudspeakers to every "
    "village, by commune",
    "Không đủ dữ liệu": "Not enough data",
    "Chưa đưa vào sử dụng": "Not yet in service",
    "Không đạt": "Fail",
    "Thủ công": "Manual",
    "Bản đồ": "Map",
    "Tải báo cáo": "Download reports",
    "Phát khẩn cấp": "Emergency broadcast",
    "Bạn chắc chắn muốn phát khẩn cấp tới toàn bộ các cụm loa đã chọn?": (
        "Really broadcast an emergency message to every selected cluster?"
    ),
    "Phát khẩn cấp ngay": "Broadcast emergency now",
    "Kỳ báo cáo": "Reporting period",
    "Số thôn": "Villages",
    "Thôn đạt": "Villages reached",
    "Xã đạt": "Communes passing",
    "Không có tọa độ": "No coordinates",
    "Toàn tỉnh (mọi cụm loa)": "Whole province (every cluster)",
    "Chọn xã": "Choose communes",
    "Hủy": "Cancel",
    "30 ngày qua": "Last 30 days",
    "Quý {q}/{y}": "Quarter {q}/{y}",
    "6 tháng đầu năm {y}": "First half of {y}",
    "6 tháng cuối năm {y}": "Second half of {y}",
    "Năm {y}": "Year {y}",
    "Xem": "View",
    "Bỏ qua": "Dismiss",
    "Nhận lúc": "Received",
    "Giờ đề xuất": "Suggested time",
    "Địa chỉ gửi âm thanh (nguồn phát)": "Audio source address (push here)",
    "Đang phát trực tiếp": "Live now",
    "Cụm loa đã phát": "Clusters that played",
    "Cụm loa chưa phát": "Clusters that did not play",
    "Tỉ lệ phát": "Aired ratio",
    "Lượt phát": "Airing",
    "Hôm nay": "Today",
    "Đang gửi…": "Sending…",
    "Chưa chọn nơi phát": "Choose where to play",
    "Đã lên lịch": "Scheduled",
    "Thời gian": "Time",
    # errors
    "Không có quyền": "Forbidden",
    "Chưa đăng nhập": "Not logged in",
    "Trang không tồn tại": "Page not found",
    "Về trang chính": "Go to the main page",
    "Có lỗi, hãy thử lại.": "Something went wrong; try again.",
    # values and errors (issue 18: words, not codes)
    "Bình thường": "OK",
    "Hỏng": "Faulty",
    "Tắt": "Off",
    "Điện lưới": "Mains",
    "Năng lượng mặt trời": "Solar",
    "Di động 4G": "Mobile 4G",
    "Di động 3G": "Mobile 3G",
    "Cáp mạng": "Ethernet",
    "Wi-Fi": "Wi-Fi",
    "không nhận được luồng phát trực tiếp": "could not receive the live stream",
    "không tải được tệp âm thanh": "could not download the audio file",
    "tệp tải về bị hỏng (sai mã kiểm tra)": "the downloaded file is corrupt (checksum)",
    "lệnh đã quá hạn": "the command expired",
    "đang phát bản tin khác": "busy with another item",
    "mất kết nối đột ngột": "connection lost",
    "tắt máy": "shut down",
    "Không tìm thấy trang này.": "This page does not exist.",
    "Máy chủ gặp lỗi; đã ghi lại để kỹ thuật viên xem. Hãy thử lại sau.": (
        "The server hit an error; it was logged for the technicians. Try again later."
    ),
    "Lỗi {status}": "Error {status}",
    "Từ viết tắt của tỉnh": "The province's abbreviations",
    "Máy đọc bản tin sẽ đọc các từ này theo cách bạn ghi, từ lần nghe thử hoặc bản tin tiếp theo.": (  # noqa: E501 (the key is the sentence itself)
        "The speech engine reads these as you write them, from the next preview or bulletin."
    ),
    "Xóa": "Delete",
    "Chưa có từ viết tắt riêng.": "No abbreviations of your own yet.",
    "Viết tắt": "Abbreviation",
    "Thêm": "Add",
    "Chọn «Toàn xã» hoặc từng thôn, không chọn cả hai.": (
        "Choose “Whole commune” or single villages, not both."
    ),
    "Cần chú ý": "Warning",
    "Dao (ghi âm)": "Dao (recorded)",
    "Ghi chú": "Note",
    "Ghi chú (đã làm gì, đã báo ai)": "Note (what was done, who was told)",
    "Giờ (HH:MM)": "Time (HH:MM)",
    "Hẹn giờ": "At a set time",
    "Kiểm tra trước khi gửi": "Check before sending",
    "Lỗi thiết bị": "Equipment fault",
    "Máy chưa đọc được tiếng Tày, Nùng, Dao: hãy ghi âm bản tin bằng giọng người đọc rồi "
    "chọn «Tải âm thanh lên».": (
        "The machine cannot read Tày, Nùng or Dao yet: record the bulletin with a human "
        "voice and choose “Upload audio”."
    ),
    "Nghiêm trọng": "Critical",
    "Ngày (dd/mm/yyyy)": "Date (dd/mm/yyyy)",
    "Nùng (ghi âm)": "Nùng (recorded)",
    "Phát ngay": "Play now",
    "Sửa lại": "Go back and change",
    "Thôi sửa": "Stop editing",
    "Tày (ghi âm)": "Tày (recorded)",
    "Tôi xác nhận phát bản tin dài này": "I confirm this long bulletin",
    "Xem lại trước khi gửi": "Review before sending",
    "Xác nhận và gửi": "Confirm and send",
    "khuếch đại, đường dây loa": "amplifier, speaker line",
    "mất kết nối": "offline",
    "pin, sóng yếu": "battery, weak signal",
    "Đến ngày (không bắt buộc)": "Until (optional)",
    "Bản tin dài {d}, quá {limit}. Hãy xác nhận lần nữa.": (
        "This bulletin lasts {d}, over {limit}. Confirm once more."
    ),
    "Bỏ 1 lần": "Skip once",
    "Bỏ phát ngày này": "Skip this day",
    "Chưa chọn giờ phát: hãy nhập ngày và giờ phát, hoặc chọn «Phát ngay».": (
        "No start time: enter a date and time, or choose “Play now”."
    ),
    "Chưa chọn nơi phát: hãy chọn «Toàn xã» hoặc ít nhất một thôn.": (
        "Nowhere chosen: choose “Whole commune” or at least one village."
    ),
    "Chắc chắn hủy «{t}»": "Really cancel “{t}”",
    "Ngày bỏ phát (dd/mm/yyyy)": "Day to skip (dd/mm/yyyy)",
    "Ngày hoặc giờ không hợp lệ: ngày dạng dd/mm/yyyy, giờ dạng HH:MM.": (
        "Invalid date or time: date as dd/mm/yyyy, time as HH:MM."
    ),
    "Nơi phát": "Where",
    "Sửa": "Edit",
    "Tiếp tục": "Resume",
    "Tạm dừng": "Paused",
    "giây": "s",
    "lặp lại": "repeats",
    "phát tại {where} lúc {when}.": "plays at {where} at {when}.",
    "{n} cụm loa": "{n} clusters",
    "{n} cụm đang mất kết nối": "{n} offline now",
    "Đang kiểm tra…": "Checking…",
    "Đang sửa «{t}». Khi gửi, bản mới thay bản cũ; bản cũ được giữ trong lịch sử.": (
        "Editing “{t}”. Sending makes a new version; the old one is kept in the history."
    ),
    "Bản nháp": "Draft",
    "Chờ duyệt": "Awaiting approval",
    "Phát một phần": "Partly played",
    "Không phát được": "Not played",
    "Đã hủy": "Cancelled",
    "Khác": "Other",
}


# CAP emergency alerts (issue 19): alerts.html, alert.html and the alert states.
EN.update(
    {
        "Cảnh báo khẩn cấp": "Emergency alerts",
        "Cảnh báo theo chuẩn CAP 1.2 nhận từ hệ thống của tỉnh, nguồn tin tự động hoặc tải lên.": (
            "CAP 1.2 alerts received from the province's system, from feeds, or uploaded."
        ),
        "Tải lên tài liệu CAP": "Upload a CAP document",
        "Tệp CAP (XML)": "CAP file (XML)",
        "Tài liệu bị từ chối": "Document refused",
        "Nguồn tin": "Source",
        "Tài liệu đã nhận": "Documents received",
        "Chưa nhận cảnh báo nào.": "No alert received yet.",
        "Sự kiện": "Event",
        "Mức độ": "Severity",
        "Nơi gửi": "Sender",
        "Loại tin": "Message type",
        "Khu vực": "Area",
        "Duyệt lúc": "Approved at",
        "Hết hiệu lực": "Expires",
        "Lời đọc": "Spoken text",
        "Duyệt và phát ngay": "Approve and air now",
        "Dừng cảnh báo": "Stop the alert",
        "Bằng chứng phát": "Proof of play",
        "Cụm loa nhắm tới": "Targeted clusters",
        "Cụm loa đầu tiên phát": "First cluster playing",
        "50% cụm loa đã phát": "50% of clusters playing",
        "99% cụm loa đã phát": "99% of clusters playing",
        "Diễn biến": "Timeline",
        "diễn tập": "drill",
        "tự động": "automatic",
        "Chờ duyệt": "Awaiting approval",
        "Chờ duyệt (đã chuyển lên tỉnh)": "Awaiting approval (escalated to the province)",
        "Đang phát": "On air",
        "Đã hết hiệu lực": "Expired",
        "Đã hủy": "Cancelled",
        "Đã được cập nhật": "Superseded by an update",
        "Bị từ chối phát": "Rejected",
        "Chỉ lưu (không phát)": "Stored only (not aired)",
        "Mẫu lời đọc theo loại sự kiện": "Spoken templates by event type",
        "Chỗ trống dùng được": "Placeholders",
        "Mẫu lời đọc": "Spoken template",
        "Loại sự kiện (hoặc * cho mọi loại)": "Event type (or * for every type)",
        # Warning tones per event type (issue 19, item 4).
        "Tín hiệu cảnh báo": "Warning tone",
        "Tín hiệu cảnh báo trước lời đọc": "Warning tone before the speech",
        "không có tín hiệu": "no tone",
        "{count} hồi {on} giây, nghỉ {off} giây": "{count} blasts of {on} s, {off} s apart",
        "{count} hồi {on} giây": "{count} blast(s) of {on} s",
        "mặc định của tỉnh": "province default",
        "theo mẫu": "from template",
        "Mặc định của tỉnh": "Province default",
        "Không có tín hiệu (sự kiện nhẹ)": "No tone (minor events)",
        "Mẫu riêng, ví dụ 3x20/10 = 3 hồi 20 giây, nghỉ 10 giây": (
            "Own pattern, e.g. 3x20/10 = 3 blasts of 20 s, 10 s apart"
        ),
        "Tần số (Hz, bỏ trống = mặc định)": "Frequency (Hz, empty = default)",
    }
)


def get_lang(request: Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, "")
    if lang in LANGUAGES:
        return lang
    ctx = getattr(request.app.state, "ctx", None)
    configured = getattr(getattr(ctx, "settings", None), "language", DEFAULT_LANGUAGE)
    return configured if configured in LANGUAGES else DEFAULT_LANGUAGE


def translate(lang: str, message: str, **values: object) -> str:
    text = EN.get(message, message) if lang == "en" else message
    return text.format(**values) if values else text


def translator(lang: str) -> Callable[..., str]:
    def _(message: str, **values: object) -> str:
        return translate(lang, message, **values)

    return _


# Strings the browser scripts need, handed to them as JSON in each page.
JS_STRINGS = (
    "Hoạt động",
    "Suy giảm",
    "Mất kết nối",
    "Chưa rõ",
    "Lỗi bộ khuếch đại",
    "Bộ khuếch đại tắt",
    "Lỗi đường dây loa",
    "Pin yếu",
    "Sóng yếu",
    "Đang chạy pin",
    "Không có cụm loa nào khớp.",
    "Trực tiếp",
    "Mất kết nối trực tiếp, đang thử lại…",
    "Đang tải…",
    "Xác nhận",
    "Đã xác nhận",
    "Không có cảnh báo nào.",
    "Trang {page}/{pages}",
    "{n} cụm",
    "Đã gửi lệnh tới cụm loa.",
    "Có lỗi, hãy thử lại.",
    "Không có cụm lạ nào.",
    "Duyệt",
    "Đã duyệt",
    "Chức năng này chưa sẵn sàng trên máy chủ.",
    "Đã gửi.",
    "Đã tải lên",
    "Bạn chắc chắn muốn phát khẩn cấp tới toàn bộ các cụm loa đã chọn?",
    "Không có bản tin nào.",
    "Không có lịch phát.",
    "Đạt",
    "Không đạt",
    "Thủ công",
    "Không đủ dữ liệu",
    "Chưa đưa vào sử dụng",
    "Chưa đăng nhập",
    "Không có quyền",
    "Mất kết nối",
    "Đã phát",
    "Không phát",
    "Chưa tới giờ",
    "Quá hạn nhịp tim",
    "Mất kết nối đột ngột",
    "Tắt máy",
    "Báo ngoại tuyến",
    # commune officer and province pages
    "Bản đồ",
    "Bỏ qua",
    "Chưa chọn nơi phát",
    "Cụm loa",
    "Cụm loa chưa phát",
    "Cụm loa đã phát",
    "Giờ phát",
    "Giờ đề xuất",
    "Hôm nay",
    "Không có tọa độ",
    "Kết quả",
    "Lên lịch",
    "Lý do không phát",
    "Mức ưu tiên",
    "Nhận lúc",
    "Phát trực tiếp",
    "Thời gian",
    "Tiêu đề",
    "Trạng thái",
    "Trạng thái bản tin",
    "Tỉ lệ phát",
    "Xem",
    "Đang gửi…",
    "Đang phát trực tiếp",
    "Địa chỉ gửi âm thanh (nguồn phát)",
    "Thường",
    "Ưu tiên",
    "Khẩn cấp",
    # issue 18: safe sends, control
    "Bản tin dài {d}, quá {limit}. Hãy xác nhận lần nữa.",
    "Bỏ 1 lần",
    "Bỏ phát ngày này",
    "Chưa chọn giờ phát: hãy nhập ngày và giờ phát, hoặc chọn «Phát ngay».",
    "Chưa chọn nơi phát: hãy chọn «Toàn xã» hoặc ít nhất một thôn.",
    "Chắc chắn hủy «{t}»",
    "Hủy",
    "Ngày bỏ phát (dd/mm/yyyy)",
    "Ngày hoặc giờ không hợp lệ: ngày dạng dd/mm/yyyy, giờ dạng HH:MM.",
    "Ngôn ngữ phát",
    "Nơi phát",
    "Phát ngay",
    "Sửa",
    "Thời lượng",
    "Tiếp tục",
    "Tạm dừng",
    "giây",
    "lặp lại",
    "phát tại {where} lúc {when}.",
    "{n} cụm loa",
    "{n} cụm đang mất kết nối",
    "Đang kiểm tra…",
    "Đang sửa «{t}». Khi gửi, bản mới thay bản cũ; bản cũ được giữ trong lịch sử.",
    "Đã lên lịch",
    "Bản nháp",
    "Chờ duyệt",
    "Phát một phần",
    "Không phát được",
    "Đã hủy",
    "Tiếng Việt",
    "Tày",
    "Nùng",
    "Dao",
    "Khác",
)


def js_catalogue(lang: str) -> dict[str, str]:
    return {m: translate(lang, m) for m in JS_STRINGS}


def describe_event(lang: str, payload: dict, titles: Mapping[str, str] | None = None) -> str:
    """One line for a stored node event. Known error codes read as words; a broadcast is
    named by its title when ``titles`` knows its wire id; what else the node wrote (a
    detail, an unknown error) is quoted as it is; an unknown type keeps its raw fields."""

    def _(message: str, **values: object) -> str:
        return translate(lang, message, **values)

    kind = payload.get("type")
    detail = payload.get("detail")
    if kind == "cmd_ack":
        line = (
            _("Đã thực hiện lệnh")
            if payload.get("ok")
            else _("Từ chối lệnh: {error}", error=error_label(lang, payload.get("error") or "–"))
        )
        return f"{line} ({str(payload.get('cmd_id', ''))[:8]})"
    if kind == "selftest":
        counts = {
            "ok": payload.get("speakers_ok", "–"),
            "total": payload.get("speakers_total", "–"),
        }
        line = (
            _("Đạt: {ok}/{total} loa hoạt động", **counts)
            if payload.get("ok")
            else _("Không đạt: {ok}/{total} loa hoạt động", **counts)
        )
        return f"{line} — {detail}" if detail else line
    if kind == "playback":
        phase = payload.get("phase", "")
        wire = str(payload.get("broadcast_id", ""))
        name = (titles or {}).get(wire, wire)
        line = f"{_(PHASE_LABELS.get(phase, phase))} «{name}»"
        return f"{line}: {error_label(lang, payload['error'])}" if payload.get("error") else line
    if kind == "fault":
        code = payload.get("code", "")
        line = _(FAULT_LABELS.get(code, code))
        return f"{line} — {detail}" if detail else line
    return " · ".join(
        f"{k}: {v}" for k, v in payload.items() if k not in ("type", "ts") and v is not None
    )


def template_globals(lang: str) -> dict[str, object]:
    """What every template gets: ``_``, the language, and people-facing formatters
    (dd/mm/yyyy, Asia/Ho_Chi_Minh)."""
    return {
        "_": translator(lang),
        "lang": lang,
        "fmt_date": lambda ms: format_date(ms) if ms else "",
        "fmt_dt": lambda ms: format_datetime(ms) if ms else "",
        "fmt_hm": lambda ms: ms_to_dt(ms).strftime("%H:%M") if ms else "",
        "state_label": lambda st: translate(lang, STATE_LABELS.get(st, st)),
        "reason_label": lambda r: translate(lang, REASON_LABELS.get(r, r)),
        "role_label": lambda r: translate(lang, ROLE_LABELS.get(r, r)),
        "event_label": lambda t: translate(lang, EVENT_LABELS.get(t, t)),
        "describe_event": lambda payload, titles=None: describe_event(lang, payload, titles),
        "value_label": lambda kind, v: (
            translate(lang, VALUE_LABELS.get(kind, {}).get(str(v), str(v)))
            if v not in (None, "")
            else "–"
        ),
        "dec": lambda v: decimal(lang, v),
        "place": place,
    }


def decimal(lang: str, value: object) -> str:
    """A number as people write it: "12,5" in Vietnamese, "12.5" in English. Text that is
    not a plain number ("–", "12.5 V" already joined) only has its decimal point swapped."""
    if value is None or value == "":
        return "–"
    text = str(value)
    return re.sub(r"(?<=\d)\.(?=\d)", ",", text) if lang == "vi" else text


def place(village: str | None, label: str | None, node_id: str) -> str:
    """ "Thôn Nà Pàn – Nhà văn hóa": a cluster named by village and place (the id only when
    the register knows nothing better); the same rule as ``scheduler.targets.place_name``."""
    if village and label:
        return f"{village} – {label}"
    return village or label or node_id


def error_label(lang: str, error: object) -> str:
    text = str(error)
    return translate(lang, ERROR_LABELS.get(text, text))


def wire_titles(titles_by_broadcast: Mapping[int, str], payloads: list[dict]) -> dict[str, str]:
    """``{"b29-a3469": "Lịch tiêm chủng"}`` for the playback events given, from broadcast
    titles looked up by the caller."""
    out = {}
    for p in payloads:
        m = _WIRE_ID.fullmatch(str(p.get("broadcast_id", "")))
        if m and int(m.group(1)) in titles_by_broadcast:
            out[m.group(0)] = titles_by_broadcast[int(m.group(1))]
    return out


def wire_broadcast_ids(payloads: list[dict]) -> set[int]:
    return {
        int(m.group(1))
        for p in payloads
        if (m := _WIRE_ID.fullmatch(str(p.get("broadcast_id", ""))))
    }


# Indicator drill-down and inspection records (issue 16): indicator_*.html, _indicator.html.
EN.update(
    {
        "Chỉ tiêu": "Indicator",
        "Chỉ tiêu truyền thanh": "Radio indicator",
        "Chỉ tiêu truyền thanh theo xã": "Radio indicator by commune",
        "Vị trí": "You are here",
        "Biên bản kiểm tra đài FM/hữu tuyến": "FM/wired station inspection records",
        "Buổi phát": "Broadcasts",
        "Buổi phát tới cụm loa": "Broadcasts aimed at the cluster",
        "Bản quét biên bản (PDF, JPEG hoặc PNG, tối đa {mb} MB)": (
            "Scanned record (PDF, JPEG or PNG, at most {mb} MB)"
        ),
        "Bản tin": "Bulletin",
        "Bộ tiêu chí áp dụng": "Criteria set applied",
        "Chuyển trạng thái trong kỳ": "State changes in the period",
        "Chưa có biên bản kiểm tra nào.": "No inspection recorded yet.",
        "Chưa có bản quét biên bản.": "No scanned record yet.",
        "Chỉ hiện 2.000 dòng đầu; toàn bộ có trong thư mục bằng chứng của báo cáo.": (
            "Only the first 2,000 rows are shown; all of them are in the report's evidence folder."
        ),
        "Chứng minh liên tục": "Proven continuity",
        "Các thôn của xã cũ được đánh giá theo danh mục từng ngày.": (
            "The former communes' villages are judged on the register as it stood each day."
        ),
        "IP (CNTT-VT)": "IP (ICT)",
        "hữu tuyến": "wired",
        "Có": "Yes",
        "Không": "No",
        "Căn cứ kết luận": "Grounds of the verdict",
        "FM không dây": "FM (wireless)",
        "Hữu tuyến": "Wired",
        "Ghi biên bản kiểm tra mới": "Record a new inspection",
        "Hiệu lực đến (dd/mm/yyyy)": "Valid until (dd/mm/yyyy)",
        "Khoảng không giám sát được": "Unobserved stretches",
        "Không có buổi phát nào tới cụm loa trong kỳ.": (
            "No broadcast was aimed at the cluster in the period."
        ),
        "Không có chuyển trạng thái nào trong kỳ.": "No state change in the period.",
        "Không có cụm loa nào trong kỳ.": "No cluster in the period.",
        "Không có xã nào trong kỳ này.": "No commune in this period.",
        "Không giám sát được": "Unobserved",
        "Không giám sát được, cụm loa chứng minh hoạt động liên tục": (
            "Unobserved, the cluster proved it kept running"
        ),
        "Không tính": "Not counted",
        "Khả dụng": "Availability",
        "Khả dụng (trên thời gian giám sát)": "Availability (of observed time)",
        "Khả dụng tại thôn (trên thời gian giám sát)": (
            "Availability in the village (of observed time)"
        ),
        "Loại đài": "Station kind",
        "Lưu biên bản": "Save the record",
        "Mọi thôn đạt và đài phát đủ số buổi mỗi tuần.": (
            "Every village passes and the station aired enough every week."
        ),
        "Nghe được": "Audible",
        "Ngày kiểm tra (dd/mm/yyyy)": "Inspection date (dd/mm/yyyy)",
        "Người kiểm tra": "Inspector",
        "Ngưỡng": "Thresholds",
        "Phần {n}": "Part {n}",
        "Sang": "To",
        "Số buổi": "Broadcasts",
        "Số buổi phát theo tuần": "Broadcasts per week",
        "Số buổi đã phát": "Broadcasts aired",
        "Số cụm loa": "Clusters",
        "Thời gian không giám sát được (bộ điều khiển dừng hoặc mất kết nối broker): {n} khoảng": (
            "Unobserved time (controller stopped or cut off from the broker): {n} stretches"
        ),
        "Thời gian sử dụng trong kỳ": "In-service time in the period",
        "Trạng thái đầu kỳ": "State at the start",
        "Tuần": "Week",
        "Tuần không xét (giám sát thiếu)": "Weeks not judged (too little observed)",
        "Tính là đã phát: {p} · không phát: {m} · không tính (đã hủy hoặc chưa kết thúc): {x}": (
            "Counted as aired: {p} · not aired: {m} · not counted (cancelled or not over): {x}"
        ),
        "Tải về": "Download",
        "Vị trí trong kỳ": "Placement in the period",
        "Xem bản quét": "View the scan",
        "Xã hình thành do sáp nhập; các xã cũ": "Commune formed by a merger; former communes",
        "Xã không có thôn nào trong kỳ.": "The commune had no village in the period.",
        "chỉ tiêu": "indicator",
        "cụm loa chứng minh hoạt động liên tục": "the cluster proved it kept running",
        "giám sát {p}": "observed {p}",
        "giờ": "h",
        "hiệu lực": "in force",
        "hiệu lực đến": "valid until",
        "không tính là hoạt động, cũng không tính là hỏng": "counted neither as up nor as down",
        "khả dụng": "availability",
        "phát {p}/{a} buổi": "aired {p}/{a}",
        "sáp nhập ngày {d}": "merged on {d}",
        "sáp nhập từ": "merged from",
        "thời gian giám sát tối thiểu": "minimum observed time",
        "tỉ lệ phát": "aired share",
        "từ {d}": "from {d}",
        "{n}/{t} thôn đạt": "{n}/{t} villages pass",
        "Đài IP được đánh giá từ dữ liệu của các cụm loa; biên bản thủ công chỉ dành cho đài FM "
        "hoặc hữu tuyến.": "IP stations are judged on the clusters' data; manual records are "
        "for FM or wired stations only.",
        "Đã giám sát": "Observed",
        "Đặt tại thôn": "Placed in the village",
        "đã giám sát {p} thời gian kỳ báo cáo": "observed {p} of the reporting period",
        "đưa vào sử dụng từ {d}": "in service from {d}",
        "đến thời điểm đánh giá": "up to the evaluation time",
        "… và {n} khoảng khác": "… and {n} more",
    }
)


# The content library (issue 18): _library.html and LoaPages.library.
_LIBRARY_EN = {
    "Thư viện âm thanh": "Audio library",
    "Tìm theo tên": "Search by title",
    "vd: tiem phong": "e.g. vaccination",
    "Thư viện": "Library",
    "Tất cả": "All",
    "Của xã": "The commune's",
    "Thư viện của tỉnh": "Province library",
    "Xem thêm": "More",
    "Âm thanh từ thư viện": "Audio from the library",
    "Không tìm thấy âm thanh nào khớp.": "No audio matches.",
    "Thư viện chưa có âm thanh nào.": "The library has no audio yet.",
    "{n} bản tin đang dùng": "used by {n} bulletins",
    "Nghe": "Play",
    "Dùng để phát": "Use in a bulletin",
    "Đổi tên": "Rename",
    "Xóa": "Delete",
    "Tên mới": "New title",
    "Lưu": "Save",
    "Thôi": "Cancel",
    "Tiêu đề không được để trống.": "The title is required.",
    "Đã đổi tên.": "Renamed.",
    "Chắc chắn xóa «{t}» khỏi thư viện?": "Really delete «{t}» from the library?",
    "Đã xóa «{t}».": "Deleted «{t}».",
    "Đã gửi xong, máy chủ đang xử lý âm thanh…": "Sent; the server is processing the audio…",
    "Đã chọn «{t}» từ thư viện: chọn nơi phát và giờ phát rồi gửi.": (
        "«{t}» chosen from the library: choose where and when, then send."
    ),
}
EN.update({k: v for k, v in _LIBRARY_EN.items() if k not in EN})
JS_STRINGS = JS_STRINGS + tuple(m for m in _LIBRARY_EN if m not in JS_STRINGS)

# Alarm notifications (issue 18): notifications.html and LoaPages.notify.
_NOTIFY_PAGE_EN = {
    "Nhận thông báo": "Notifications",
    "Nhận thông báo cảnh báo": "Alarm notifications",
    "Khi cụm loa mất kết nối hoặc hỏng, Loa gửi cho bạn một e-mail hoặc gọi một địa chỉ "
    "webhook (cổng Zalo, SMS…). Chỉ cảnh báo của các xã bạn phụ trách.": (
        "When a cluster goes offline or fails, Loa e-mails you or calls a webhook (a Zalo or "
        "SMS gateway). Only alarms of the communes you look after."
    ),
    "E-mail": "E-mail",
    "Webhook (Zalo, SMS)": "Webhook (Zalo, SMS)",
    "Địa chỉ e-mail": "E-mail address",
    "Địa chỉ webhook (https://…)": "Webhook URL (https://…)",
    "Khóa ký HMAC (không bắt buộc)": "HMAC signing key (optional)",
    "Đã đặt khóa ký; để trống để giữ nguyên.": "A signing key is set; leave empty to keep it.",
    "Máy chủ chưa cấu hình gửi e-mail: thư sẽ chờ đến khi quản trị đặt LOA_SMTP_HOST.": (
        "The server has no e-mail set up: messages wait until LOA_SMTP_HOST is set."
    ),
    "Mức cảnh báo": "Severities",
    "Xã (không chọn = mọi xã bạn phụ trách)": "Communes (none = every commune you look after)",
    "Đang nhận": "Active",
    "Thôi nhận": "Stop",
    "Lần gửi gần đây": "Recent deliveries",
}
_NOTIFY_JS_EN = {
    "Chưa gửi thông báo nào.": "Nothing sent yet.",
    "Đã gửi lúc {t}": "Sent at {t}",
    "Lần {n} lỗi: {e}. Thử lại lúc {t}.": "Try {n} failed: {e}. Next try at {t}.",
    "Không gửi được sau {n} lần: {e}": "Not delivered after {n} tries: {e}",
    "Đã lưu.": "Saved.",
    "Đã thôi nhận.": "Stopped.",
}
EN.update({k: v for k, v in {**_NOTIFY_PAGE_EN, **_NOTIFY_JS_EN}.items() if k not in EN})
JS_STRINGS = JS_STRINGS + tuple(m for m in _NOTIFY_JS_EN if m not in JS_STRINGS)
# Live from the phone (issue 18): the "Phát trực tiếp" page.
EN.update(
    {
        "Phát trực tiếp bằng micrô điện thoại": "Go live with the phone's microphone",
        "Thời lượng tối đa": "Longest duration",
        "phút": "min",
        "Xem lại trước khi phát": "Review before going live",
        "Kiểm tra trước khi phát": "Check before going live",
        "Khi bấm nút dưới, trình duyệt sẽ xin dùng micrô. Cụm loa bắt đầu phát sau vài giây.": (
            "When you press the button below, the browser asks for the microphone. The clusters "
            "start playing a few seconds later."
        ),
        "Mức âm micrô": "Microphone level",
        "Đang kết nối…": "Connecting…",
        "Cụm loa đang nghe": "Clusters listening",
        "Dừng phát": "Stop broadcast",
        "Đã dừng": "Stopped",
        "Phát trực tiếp bị lỗi": "Live broadcast failed",
        "Đang xin dùng micrô…": "Asking for the microphone…",
        "Không dùng được micrô: hãy cho phép trình duyệt dùng micrô rồi thử lại.": (
            "The microphone cannot be used: allow the browser to use it and try again."
        ),
        "Trình duyệt này không cho dùng micrô ở đây. Hãy mở trang qua https bằng Chrome hoặc "
        "Firefox.": "This browser does not allow the microphone here. Open the page over https "
        "in Chrome or Firefox.",
        # A cluster's phase as the live page lists it (scheduler.outcomes.PHASE_LABELS_VI).
        "Chưa gửi": "Not sent",
        "Đã gửi lệnh": "Command sent",
        "Đã nhận lệnh": "Command received",
        "Đã tải nội dung": "Content downloaded",
        "Đã phát xong": "Played to the end",
        "Bị ngắt bởi bản tin ưu tiên hơn": "Interrupted by a higher priority bulletin",
        "Không phản hồi": "No answer",
    }
)
JS_STRINGS += (
    "Thời lượng tối đa",
    "Đang kết nối…",
    "Đã dừng",
    "Phát trực tiếp bị lỗi",
    "Đang xin dùng micrô…",
    "Phát tới",
    "Đã phát",
    "Phát xong",
    "Bắt đầu phát",
    "Phát lỗi",
    "Chưa gửi",
    "Đã gửi lệnh",
    "Đã nhận lệnh",
    "Đã tải nội dung",
    "Đang phát",
    "Đã phát xong",
    "Bị ngắt bởi bản tin ưu tiên hơn",
    "Lỗi",
    "Không phản hồi",
    "Không dùng được micrô: hãy cho phép trình duyệt dùng micrô rồi thử lại.",
    "Trình duyệt này không cho dùng micrô ở đây. Hãy mở trang qua https bằng Chrome hoặc Firefox.",
)

# An alert's proof as a file (issue 19): alert.html.
EN.update({"Tải bằng chứng": "Download the proof"})
# The alert map and preview, a cluster's coordinates (issue 19).
EN.update(
    {
        k: v
        for k, v in {
            "Bản đồ vùng cảnh báo và cụm loa": "Map of the alert area and the clusters",
            "Đã phát": "Played",
            "Chưa phát": "Not played",
            "Trong vùng cảnh báo": "In the alert area",
            "Cụm loa khác": "Other clusters",
            "Vùng cảnh báo": "Alert area",
            "{n} cụm loa chưa có toạ độ": "{n} clusters without coordinates",
            "Theo thôn": "By village",
            "cụm đã phát": "clusters played",
            "cụm loa": "clusters",
            "Không có cụm loa nào trong vùng.": "No cluster in the area.",
            "Xem trước cảnh báo": "Alert preview",
            "Chỉ xem trước: chưa lưu, chưa phát.": "Preview only: nothing stored, nothing aired.",
            "Cách phát": "How it airs",
            "Phát ngay (tự động)": "At once (automatic)",
            "Chờ cán bộ duyệt": "Waits for an officer's approval",
            "Mã vùng không nhận ra": "Unknown area codes",
            "Vùng không có cụm loa": "Areas without clusters",
            "Vùng cảnh báo và các cụm loa chưa có toạ độ để vẽ bản đồ.": (
                "Neither the alert area nor the clusters have coordinates to draw a map."
            ),
            "Xem trước tài liệu CAP": "Preview a CAP document",
            "Xem cụm loa nào sẽ phát trên bản đồ và theo thôn, lời đọc và cách phát; "
            "không lưu, không phát.": (
                "See which clusters would play, on the map and by village, the words and "
                "how it airs; nothing is stored or aired."
            ),
            "Xem trước": "Preview",
            "Toạ độ": "Coordinates",
            "Chưa có (dùng toạ độ của xã)": "None (the commune's are used)",
            "Toạ độ để cảnh báo khẩn cấp theo vùng tới đúng cụm loa (độ thập phân, ví dụ "
            "21,8537 và 106,7610; để trống cả hai để xoá).": (
                "Coordinates, so that an emergency alert for an area reaches the right "
                "clusters (decimal degrees, e.g. 21.8537 and 106.7610; leave both empty to "
                "clear them)."
            ),
            "Vĩ độ": "Latitude",
            "Kinh độ": "Longitude",
            "Lưu toạ độ": "Save the coordinates",
        }.items()
        if k not in EN
    }
)
