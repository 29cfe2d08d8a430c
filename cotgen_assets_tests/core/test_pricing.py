import pytest

from cotgen_assets.core.model_io import Usage
from cotgen_assets.core.pricing import UnknownModelError, cost_usd, load_prices, online_cost_usd

PRO = "gemini-3.1-pro-preview"


def test_shipped_table_has_the_models_with_sources():
    prices = load_prices()
    assert {PRO, "gemini-3-pro-preview", "gemini-2.5-flash"} <= set(prices)
    for price in prices.values():
        assert price.source_url.startswith("https://") and price.as_of
    pro = prices[PRO]
    assert (pro.batch.input, pro.batch.output) == (1.00, 6.00)
    assert (pro.batch_over_threshold.input, pro.batch_over_threshold.output) == (2.00, 9.00)
    assert (pro.standard.input, pro.standard.output) == (2.00, 12.00)
    assert (pro.standard_over_threshold.input, pro.standard_over_threshold.output) == (4.00, 18.00)
    assert pro.tier_threshold_tokens == 200_000


def test_batch_cost_by_hand():
    # 1,000 prompt + 300 thinking + 200 answer tokens: 1000 * $1 + 500 * $6 per 1M
    usage = Usage(input_tokens=1000, cached_tokens=0, thinking_tokens=300, output_tokens=200)
    assert cost_usd(PRO, usage) == pytest.approx((1000 * 1.00 + 500 * 6.00) / 1e6)
    assert cost_usd("models/" + PRO, usage) == cost_usd(PRO, usage)


def test_standard_cost_is_double_batch():
    usage = Usage(1000, 0, 300, 200)
    assert cost_usd(PRO, usage, batch=False) == pytest.approx((1000 * 2.00 + 500 * 12.00) / 1e6)
    assert cost_usd(PRO, usage, batch=False) == pytest.approx(2 * cost_usd(PRO, usage))


def test_long_prompt_tier_is_chosen_by_the_request_prompt():
    at_limit = Usage(200_000, 0, 1000, 0)
    over = Usage(200_001, 0, 1000, 0)
    assert cost_usd(PRO, at_limit) == pytest.approx((200_000 * 1.00 + 1000 * 6.00) / 1e6)
    assert cost_usd(PRO, over) == pytest.approx((200_001 * 2.00 + 1000 * 9.00) / 1e6)
    assert cost_usd(PRO, over, batch=False) == pytest.approx((200_001 * 4.00 + 1000 * 18.00) / 1e6)


def test_cached_tokens_are_part_of_the_prompt_at_the_cached_rate():
    usage = Usage(input_tokens=10_000, cached_tokens=8_000, thinking_tokens=0, output_tokens=100)
    # 2,000 fresh at $1, 8,000 cached at $0.20 (batch bills cache hits like standard), 100 out at $6
    assert cost_usd(PRO, usage) == pytest.approx((2000 * 1.00 + 8000 * 0.20 + 100 * 6.00) / 1e6)
    assert cost_usd(PRO, usage, batch=False) == pytest.approx((2000 * 2.00 + 8000 * 0.20 + 100 * 12.00) / 1e6)
    long = Usage(300_000, 100_000, 0, 0)
    assert cost_usd(PRO, long) == pytest.approx((200_000 * 2.00 + 100_000 * 0.40) / 1e6)


def test_zero_usage_costs_nothing():
    assert cost_usd(PRO, Usage()) == 0.0


def test_unknown_model_names_the_known_ones():
    with pytest.raises(KeyError) as info:
        cost_usd("gemini-9-ultra", Usage(1, 0, 0, 1))
    assert isinstance(info.value, UnknownModelError)
    message = str(info.value)
    assert "gemini-9-ultra" in message and PRO in message and "gemini-2.5-flash" in message


HEADER = (
    "model,standard_input_usd_per_1m,standard_input_over_200k_usd_per_1m,standard_output_usd_per_1m,"
    "standard_output_over_200k_usd_per_1m,standard_cached_input_usd_per_1m,standard_cached_input_over_200k_usd_per_1m,"
    "batch_input_usd_per_1m,batch_input_over_200k_usd_per_1m,batch_output_usd_per_1m,batch_output_over_200k_usd_per_1m,"
    "batch_cached_input_usd_per_1m,batch_cached_input_over_200k_usd_per_1m,tier_threshold_tokens,source_url,as_of,note\n"
)


def test_override_file_by_env_and_by_path(tmp_path, monkeypatch):
    path = tmp_path / "my_prices.csv"
    path.write_text(
        HEADER + "my-model,10,,20,,,,5,,10,,,,1000,https://example.com/prices,2026-01-01,blank tiers\n"
    )
    usage = Usage(input_tokens=5000, cached_tokens=1000, thinking_tokens=1, output_tokens=1)
    # blank tier cells mean no higher tier; blank cached price means no discount
    expected = (5000 * 5 + 2 * 10) / 1e6
    assert cost_usd("my-model", usage, prices=load_prices(path)) == pytest.approx(expected)

    monkeypatch.setenv("COTGEN_PRICES_FILE", str(path))
    assert set(load_prices()) == {"my-model"}
    assert cost_usd("my-model", usage) == pytest.approx(expected)
    with pytest.raises(KeyError, match="my-model"):
        cost_usd(PRO, usage)


def test_broken_files_say_what_is_wrong(tmp_path):
    with pytest.raises(FileNotFoundError, match="COTGEN_PRICES_FILE"):
        load_prices(tmp_path / "absent.csv")
    no_column = tmp_path / "a.csv"
    no_column.write_text("model,standard_input_usd_per_1m\nx,1\n")
    with pytest.raises(ValueError, match="batch_input_usd_per_1m"):
        load_prices(no_column)
    not_number = tmp_path / "b.csv"
    not_number.write_text(HEADER + "x,two,,1,,,,1,,1,,,,200000,u,d,n\n")
    with pytest.raises(ValueError, match="standard_input_usd_per_1m.*'two'"):
        load_prices(not_number)


def test_vertex_ai_batch_prices_have_their_own_rows_and_sources():
    vertex = load_prices(backend="vertex")
    assert {PRO, "gemini-3-pro-preview", "gemini-2.5-flash"} <= set(vertex)
    for price in vertex.values():
        assert price.source_url == "https://cloud.google.com/vertex-ai/generative-ai/pricing" and price.as_of
    pro, developer = vertex[PRO], load_prices()[PRO]
    assert (pro.batch.input, pro.batch.output) == (pro.standard.input / 2, pro.standard.output / 2)
    assert developer.source_url == "https://ai.google.dev/gemini-api/docs/pricing"
    usage = Usage(1000, 0, 300, 200)
    assert cost_usd(PRO, usage, backend="vertex") == pytest.approx((1000 * 1.00 + 500 * 6.00) / 1e6)


def test_a_row_for_one_backend_beats_a_row_for_both(tmp_path):
    path = tmp_path / "prices.csv"
    header = HEADER.replace("model,", "model,backend,", 1)
    path.write_text(
        header
        + "m,,10,,20,,,,5,,10,,,,1000,https://example.com/a,2026-01-01,both\n"
        + "m,vertex,10,,20,,,,4,,8,,,,1000,https://example.com/v,2026-01-01,vertex only\n"
    )
    usage = Usage(input_tokens=1000, output_tokens=1000)
    assert cost_usd("m", usage, prices=load_prices(path)) == pytest.approx((1000 * 5 + 1000 * 10) / 1e6)
    assert cost_usd("m", usage, prices=load_prices(path, "vertex")) == pytest.approx(
        (1000 * 4 + 1000 * 8) / 1e6
    )
    with pytest.raises(KeyError, match=r"known models: m \(on the developer batch API\)"):
        cost_usd("x", usage, prices=load_prices(path))


def test_online_cost_at_each_tier_by_hand():
    # 1,000 prompt (200 cached) + 300 thinking + 200 answer tokens
    usage = Usage(input_tokens=1000, cached_tokens=200, thinking_tokens=300, output_tokens=200)
    standard = (800 * 2.00 + 200 * 0.20 + 500 * 12.00) / 1e6
    flex = (800 * 1.00 + 200 * 0.10 + 500 * 6.00) / 1e6
    assert online_cost_usd(PRO, usage, "standard") == pytest.approx(standard)
    assert online_cost_usd(PRO, usage, "flex") == pytest.approx(flex)
    over = Usage(200_001, 0, 1000, 0)
    assert online_cost_usd(PRO, over, "flex") == pytest.approx((200_001 * 2.00 + 1000 * 9.00) / 1e6)


def test_flex_rows_have_their_own_source():
    pro = load_prices()[PRO]
    assert pro.flex_source_url.startswith("https://") and pro.flex_as_of
    assert load_prices(backend="vertex")[PRO].flex_source_url.startswith("https://")


def test_a_tier_without_a_price_is_refused_by_name():
    with pytest.raises(KeyError, match="no flex price for model 'gemini-2.5-flash'"):
        online_cost_usd("gemini-2.5-flash", Usage(1, 0, 0, 1), "flex")
    with pytest.raises(ValueError, match="'priority' is not one the project prices"):
        online_cost_usd(PRO, Usage(1, 0, 0, 1), "priority")


def test_a_price_file_without_flex_columns_still_loads(tmp_path):
    """Users' own price files predate the Flex columns: they keep working, without Flex."""
    path = tmp_path / "prices.csv"
    path.write_text(
        "model,standard_input_usd_per_1m,standard_output_usd_per_1m,batch_input_usd_per_1m,"
        "batch_output_usd_per_1m,tier_threshold_tokens,source_url,as_of\n"
        "my-model,2,8,1,4,200000,https://example.com,2026-01-01\n"
    )
    prices = load_prices(path)
    assert online_cost_usd("my-model", Usage(1_000_000, 0, 0, 0), "standard", prices=prices) == 2.0
    with pytest.raises(KeyError, match="no flex price"):
        online_cost_usd("my-model", Usage(1, 0, 0, 0), "flex", prices=prices)
