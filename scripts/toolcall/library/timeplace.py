"""Date and time tools: datetime arithmetic, calendar facts, IANA time zones (zoneinfo, fixed instants so results
do not depend on today's date), Unix timestamps, and the Chinese zodiac / sexagenary year and Western star signs."""
import calendar
import datetime as dt
from zoneinfo import ZoneInfo

from scripts.toolcall.library import pools
from scripts.toolcall.library.base import E, Family, I, S, opt

D = S(pools.date, "日期，格式 YYYY-MM-DD", "date as YYYY-MM-DD")
YEAR = I(1900, 2100, "年份", "year")
day = dt.date.fromisoformat
WEEKDAYS_ZH = ["星期一", "星期二", "星期三", "星期四", "星期五", "星期六", "星期日"]

DATES = Family("dates")
DATES.add("days_between", lambda start, end: (day(end) - day(start)).days, "两个日期之间相差的天数（end 减 start）",
          "Number of days from start to end (negative if end is earlier)",
          {"start": S(pools.date, "开始日期 YYYY-MM-DD", "start date YYYY-MM-DD"),
           "end": S(pools.date, "结束日期 YYYY-MM-DD", "end date YYYY-MM-DD")},
          ["{start} 到 {end} 相差多少天？", "从 {start} 到 {end} 一共几天？"],
          ["How many days are there from {start} to {end}?", "Days between {start} and {end}?"],
          "从 {start} 到 {end} 相差 {r} 天。", "From {start} to {end} is {r} days.")
DATES.add("add_days", lambda date, days: (day(date) + dt.timedelta(days=days)).isoformat(), "给日期加上（或减去）若干天",
          "The date a number of days after (or before, if negative) a date",
          {"date": D, "days": I(-1000, 1000, "天数，可为负", "days, may be negative")},
          ["{date} 加上 {days} 天是哪天？", "从 {date} 算起 {days} 天后是几号？"],
          ["What date is {days} days after {date}?", "Add {days} days to {date}."], "是 {r}。", "It is {r}.")
DATES.add("weekday_of", lambda date: {"weekday": day(date).strftime("%A"), "iso_weekday": day(date).isoweekday()},
          "查询某个日期是星期几", "Day of the week of a date", {"date": D},
          ["{date} 是星期几？", "查一下 {date} 是周几"], ["What day of the week is {date}?", "Which weekday was {date}?"],
          "{date} 是 {r[weekday]}（一周的第 {r[iso_weekday]} 天）。", "{date} is a {r[weekday]}.")
DATES.add("is_leap_year", calendar.isleap, "判断某年是否为闰年（公历）", "Whether a year is a leap year (Gregorian)",
          {"year": YEAR}, ["{year} 年是闰年吗？"], ["Is {year} a leap year?"], "{year} 年是闰年吗？{r}。",
          "Is {year} a leap year? {r}.")
DATES.add("days_in_month", lambda year, month: calendar.monthrange(year, month)[1], "某年某月有多少天",
          "Number of days in a month of a year", {"year": YEAR, "month": I(1, 12, "月份 1-12", "month 1-12")},
          ["{year} 年 {month} 月有几天？"], ["How many days are in month {month} of {year}?"], "{year} 年 {month} 月有 {r} 天。",
          "Month {month} of {year} has {r} days.")
DATES.add("day_of_year", lambda date: day(date).timetuple().tm_yday, "某个日期是当年的第几天",
          "Day number of a date within its year",
          {"date": D}, ["{date} 是那一年的第几天？"], ["Which day of the year is {date}?"], "是第 {r} 天。",
          "It is day {r} of the year.")
DATES.add("iso_week", lambda date: dict(zip(("year", "week", "weekday"), day(date).isocalendar())),
          "日期的 ISO 周数", "ISO year, week number and weekday of a date", {"date": D},
          ["{date} 是第几周（ISO 周）？"], ["What ISO week is {date} in?"], "{date} 在 {r[year]} 年第 {r[week]} 周。",
          "{date} is in week {r[week]} of {r[year]}.")


def _age(birth_date, on_date):
    b, o = day(birth_date), day(on_date)
    return o.year - b.year - ((o.month, o.day) < (b.month, b.day))


DATES.add("age_on", _age, "按出生日期计算在某天的周岁年龄", "Age in whole years on a given date",
          {"birth_date": S(lambda r: pools.date(r, 1940, 2010), "出生日期", "birth date"),
           "on_date": S(lambda r: pools.date(r, 2011, 2035), "计算日期", "date to compute the age on")},
          ["{birth_date} 出生的人在 {on_date} 时几周岁？"], ["How old is someone born on {birth_date} on {on_date}?"],
          "满 {r} 周岁。", "They are {r} years old.")
DATES.add("weekdays_between",
          lambda start, end: sum(1 for i in range((day(end) - day(start)).days + 1)
                                 if (day(start) + dt.timedelta(days=i)).weekday() < 5),
          "两个日期之间（含首尾）的工作日（周一到周五）天数", "Number of Monday-Friday days between two dates, both included",
          {"start": S(lambda r: pools.date(r, 2024, 2026), "开始日期", "start date"),
           "end": S(lambda r: pools.date(r, 2024, 2026), "结束日期", "end date")},
          ["{start} 到 {end} 有多少个工作日？"], ["How many weekdays from {start} to {end}?"], "共有 {r} 个工作日。",
          "There are {r} weekdays.", check=lambda x: x["start"] <= x["end"])


def _next_weekday(date, weekday):
    d = day(date)
    target = list(calendar.day_name).index(weekday)
    return (d + dt.timedelta(days=(target - d.weekday() - 1) % 7 + 1)).isoformat()


DATES.add("next_weekday", _next_weekday, "某日期之后的下一个指定星期几的日期", "Date of the next given weekday after a date",
          {"date": D, "weekday": E(list(calendar.day_name), "星期几（英文）", "weekday name")},
          ["{date} 之后的下一个 {weekday} 是几号？"], ["When is the next {weekday} after {date}?"], "是 {r}。", "It is {r}.")
DATES.add("add_months", lambda date, months: (lambda d, m: d.replace(
    year=d.year + (d.month - 1 + m) // 12, month=(d.month - 1 + m) % 12 + 1, day=min(d.day, calendar.monthrange(
        d.year + (d.month - 1 + m) // 12, (d.month - 1 + m) % 12 + 1)[1])).isoformat())(day(date), months),
          "给日期加若干个月（月底对齐）", "Add months to a date (the day is capped at the month's length)",
          {"date": D, "months": I(-24, 36, "月数，可为负", "months, may be negative")},
          ["{date} 再过 {months} 个月是哪天？"], ["What is {date} plus {months} months?"], "是 {r}。", "It is {r}.")
DATES.add("month_name", lambda month, lang="en": calendar.month_name[month] if lang == "en" else f"{month}月",
          "月份数字对应的名称", "Name of a month number",
          {"month": I(1, 12, "月份 1-12", "month 1-12"), "lang": opt(E(["en", "zh"], "语言", "language"), "en")},
          ["{month} 月的英文名是什么？"], ["What is the name of month {month}?"], "是 {r}。", "It is {r}.")
DATES.add("leap_years_between", lambda start_year, end_year: calendar.leapdays(start_year, end_year + 1),
          "两个年份之间（含首尾）有多少个闰年", "How many leap years lie between two years, both included",
          {"start_year": I(1800, 2000, "开始年份", "start year"), "end_year": I(2001, 2200, "结束年份", "end year")},
          ["{start_year} 年到 {end_year} 年之间有几个闰年？"], ["How many leap years from {start_year} to {end_year}?"],
          "共有 {r} 个闰年。", "There are {r} leap years.")

ZONES = Family("timezones")
# a plain string, not an enum: 26 zone names would cost ~350 tokens in every schema (512 per row in all)
TZ = S(pools.TIMEZONES, "IANA 时区名，如 Asia/Shanghai", "IANA time zone such as Europe/Paris")


def _convert(datetime, from_tz, to_tz):
    t = dt.datetime.fromisoformat(datetime).replace(tzinfo=ZoneInfo(from_tz)).astimezone(ZoneInfo(to_tz))
    return t.strftime("%Y-%m-%d %H:%M")


ZONES.add("convert_timezone", _convert, "把某时区的本地时间换算成另一个时区的时间",
          "Convert a local date-time from one IANA time zone to another",
          {"datetime": S(pools.datetime_text, "本地时间 YYYY-MM-DD HH:MM", "local time YYYY-MM-DD HH:MM"),
           "from_tz": TZ, "to_tz": TZ},
          ["{from_tz} 的 {datetime} 是 {to_tz} 的几点？", "把 {datetime}（{from_tz}）换算成 {to_tz} 时间"],
          ["What time is {datetime} {from_tz} in {to_tz}?", "Convert {datetime} from {from_tz} to {to_tz}."],
          "对应 {to_tz} 时间 {r}。", "That is {r} in {to_tz}.", check=lambda x: x["from_tz"] != x["to_tz"])
ZONES.add("utc_offset", lambda timezone, date: dt.datetime.fromisoformat(date + "T12:00").replace(
    tzinfo=ZoneInfo(timezone)).strftime("%z"), "某时区在某天的 UTC 偏移（考虑夏令时）",
          "UTC offset of a time zone on a date (daylight saving included)", {"timezone": TZ, "date": D},
          ["{timezone} 在 {date} 的 UTC 偏移是多少？"], ["What is the UTC offset of {timezone} on {date}?"],
          "UTC 偏移是 {r}。", "The offset is {r}.")
ZONES.add("is_dst", lambda timezone, date: bool(dt.datetime.fromisoformat(date + "T12:00").replace(
    tzinfo=ZoneInfo(timezone)).dst()), "某时区在某天是否处于夏令时", "Whether a time zone observes daylight saving time on a date",
          {"timezone": TZ, "date": D}, ["{timezone} 在 {date} 是夏令时吗？"],
          ["Is {timezone} on daylight saving time on {date}?"],
          "是否夏令时：{r}。", "Daylight saving: {r}.")
ZONES.add("timestamp_to_datetime", lambda timestamp, timezone="UTC": dt.datetime.fromtimestamp(
    timestamp, ZoneInfo(timezone)).strftime("%Y-%m-%d %H:%M:%S"), "把 Unix 时间戳转换成某时区的日期时间",
          "Date and time of a Unix timestamp in a time zone",
          {"timestamp": I(0, 2_000_000_000, "Unix 时间戳（秒）", "Unix timestamp in seconds"), "timezone": opt(TZ, "UTC")},
          ["时间戳 {timestamp} 是 {timezone} 的什么时间？", "把时间戳 {timestamp} 转成日期"],
          ["What is Unix time {timestamp} in {timezone}?", "Convert timestamp {timestamp} to a date."], "是 {r}。",
          "It is {r}.")
ZONES.add("datetime_to_timestamp", lambda datetime, timezone="UTC": int(dt.datetime.fromisoformat(datetime).replace(
    tzinfo=ZoneInfo(timezone)).timestamp()), "把某时区的日期时间转换成 Unix 时间戳",
          "Unix timestamp of a local date-time in a time zone",
          {"datetime": S(pools.datetime_text, "日期时间 YYYY-MM-DD HH:MM", "date-time YYYY-MM-DD HH:MM"),
           "timezone": opt(TZ, "UTC")},
          ["{timezone} 的 {datetime} 对应的时间戳是多少？", "{datetime} 的 Unix 时间戳是多少？"],
          ["Unix timestamp of {datetime} in {timezone}?", "What is the Unix timestamp of {datetime}?"], "时间戳是 {r}。",
          "The timestamp is {r}.")
ZONES.add("hours_between_zones", lambda tz_a, tz_b, date: (dt.datetime.fromisoformat(date + "T12:00").replace(
    tzinfo=ZoneInfo(tz_b)).utcoffset() - dt.datetime.fromisoformat(date + "T12:00").replace(
    tzinfo=ZoneInfo(tz_a)).utcoffset()).total_seconds() / 3600, "某天两个时区相差几小时（tz_b 比 tz_a 快多少）",
          "Hours that tz_b is ahead of tz_a on a date", {"tz_a": TZ, "tz_b": TZ, "date": D},
          ["{date} 这天 {tz_b} 比 {tz_a} 快几个小时？"], ["On {date}, how many hours is {tz_b} ahead of {tz_a}?"],
          "相差 {r} 小时。", "{tz_b} is {r} hours ahead.", check=lambda x: x["tz_a"] != x["tz_b"])

CULTURE = Family("zodiac")
ANIMALS_ZH = "鼠牛虎兔龙蛇马羊猴鸡狗猪"
ANIMALS_EN = ["Rat", "Ox", "Tiger", "Rabbit", "Dragon", "Snake", "Horse", "Goat", "Monkey", "Rooster", "Dog", "Pig"]
STEMS, BRANCHES = "甲乙丙丁戊己庚辛壬癸", "子丑寅卯辰巳午未申酉戌亥"
CULTURE.add("chinese_zodiac", lambda year: {"zh": ANIMALS_ZH[(year - 4) % 12], "en": ANIMALS_EN[(year - 4) % 12]},
            "农历年份对应的生肖（按农历年，忽略春节前后的差别）", "Chinese zodiac animal of a (lunar) year",
            {"year": YEAR}, ["{year} 年出生的人属什么？", "{year} 年是什么生肖年？"], ["What is the Chinese zodiac animal for {year}?"],
            "{year} 年属{r[zh]}。", "{year} is the year of the {r[en]}.")
CULTURE.add("sexagenary_year", lambda year: STEMS[(year - 4) % 10] + BRANCHES[(year - 4) % 12],
            "年份对应的天干地支纪年", "Heavenly-stem and earthly-branch name of a year", {"year": YEAR},
            ["{year} 年是什么干支年？", "{year} 年的天干地支是什么？"], ["What is the sexagenary (ganzhi) name of {year}?"],
            "{year} 年是{r}年。", "{year} is a {r} year.")
SIGNS = [((1, 20), "Capricorn", "摩羯座"), ((2, 19), "Aquarius", "水瓶座"), ((3, 21), "Pisces", "双鱼座"),
         ((4, 20), "Aries", "白羊座"), ((5, 21), "Taurus", "金牛座"), ((6, 22), "Gemini", "双子座"),
         ((7, 23), "Cancer", "巨蟹座"), ((8, 23), "Leo", "狮子座"), ((9, 23), "Virgo", "处女座"),
         ((10, 24), "Libra", "天秤座"), ((11, 23), "Scorpio", "天蝎座"), ((12, 22), "Sagittarius", "射手座"),
         ((12, 32), "Capricorn", "摩羯座")]


def _star_sign(month, day):
    for (m, d), en, zh in SIGNS:
        if (month, day) < (m, d):
            return {"en": en, "zh": zh}


CULTURE.add("star_sign", _star_sign, "按出生月日查星座", "Western star sign of a birthday (month and day)",
            {"month": I(1, 12, "月", "month"), "day": I(1, 28, "日", "day")},
            ["{month} 月 {day} 日出生是什么星座？"], ["What star sign is someone born on month {month}, day {day}?"],
            "是{r[zh]}。", "That is {r[en]}.")
CULTURE.add("is_weekend", lambda date: day(date).weekday() >= 5, "判断某日期是否是周末", "Whether a date falls on a weekend",
            {"date": D}, ["{date} 是周末吗？"], ["Is {date} a weekend?"], "{date} 是周末吗？{r}。", "Is {date} a weekend? {r}.")
CULTURE.add("weekday_name_zh", lambda date: WEEKDAYS_ZH[day(date).weekday()], "日期对应的中文星期名",
            "Chinese weekday name of a date",
            {"date": D}, ["{date} 用中文说是星期几？"], ["What is the Chinese weekday name of {date}?"], "{date} 是{r}。",
            "{date} is {r}.")

FAMILIES = [DATES, ZONES, CULTURE]
